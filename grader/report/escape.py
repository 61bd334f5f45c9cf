"""Neutralise student-controlled text for Markdown, HTML and hidden markers.

Team names, file names, claims, notes and error messages all reach reports. In a GitHub comment
they must not render as Markdown or HTML, @-mention anyone, or close the hidden marker comment.
"""

from __future__ import annotations

import re

from markupsafe import Markup

MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")
BULLET_START = re.compile(r"^(\s*)([-+=])(?=\s|$)")  # '- item' is a list; '-5' is not
NUMBER_START = re.compile(r"^(\s*\d+)([.)])(?=\s|$)")  # '1. item' is a list; '3.5' is not
ZERO_WIDTH = "\u200b"


def md(value: object) -> str:
    """Plain text inside Markdown: no markup, no HTML, no mentions, no line breaks."""
    if isinstance(value, Markup):
        return str(value)
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = MARKDOWN_SPECIAL.sub(r"\\\1", text)
    text = text.replace("@", "@" + ZERO_WIDTH)  # no @-mentions, no team pings
    text = text.replace("://", ":" + ZERO_WIDTH + "//")  # no autolinks
    text = re.sub(r"[\r\n]+", " ", text)
    text = BULLET_START.sub(r"\1\\\2", text)  # no list item at the start
    return NUMBER_START.sub(r"\1\\\2", text)


def marker_value(value: object) -> str:
    """Only [a-z0-9-] survives into a hidden marker, so nothing can close or fake it."""
    return re.sub(r"[^a-z0-9-]", "", str(value).lower())[:64]
