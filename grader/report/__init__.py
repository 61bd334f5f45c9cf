"""Renderers: ``result.json`` -> the PR comment (Markdown) and a standalone HTML page."""
