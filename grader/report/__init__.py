"""Renderers: ``result.json`` -> the PR comment (Markdown), a standalone HTML page and the terminal summary.

They read only the ``Result`` model; every string a student controls is escaped on the way out.
"""
