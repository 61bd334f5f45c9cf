"""Neutralise student-controlled text for Markdown, HTML, terminals and hidden markers.

Team names, file names, claims, notes and error messages all reach reports. In a GitHub comment
they must not render as Markdown or HTML, @-mention anyone, or close the hidden marker comment;
in every renderer, bidi overrides, isolates and invisible characters are shown as ``<U+202E>``
so that text cannot reorder or hide itself (``visible``).
"""

from __future__ import annotations

import re

from markupsafe import Markup

MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")
BULLET_START = re.compile(r"^(\s*)([-+=])(?=\s|$)")  # '- item' is a list; '-5' is not
NUMBER_START = re.compile(r"^(\s*\d+)([.)])(?=\s|$)")  # '1. item' is a list; '3.5' is not
ZERO_WIDTH = "\u200b"
# bidi embeddings, overrides and isolates, marks, zero-width and invisible formatting characters,
# line and paragraph separators, the BOM, and other C0 / C1 controls than tab and newline
HIDDEN = re.compile(
    "[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u061c\u115f\u1160\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb]"
)


def visible(value: object) -> str:
    """The text with every bidi, invisible or control character written out as <U+XXXX>."""
    text = "" if value is None else str(value)
    return HIDDEN.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def visible_html(value: object) -> object:
    """``visible`` for Jinja's HTML finalize: trusted Markup passes, other text is made visible
    (autoescape then escapes it as usual)."""
    return value if isinstance(value, Markup) or not isinstance(value, str) else visible(value)


def md(value: object) -> str:
    """Plain text inside Markdown: no markup, no HTML, no mentions, no line breaks."""
    if isinstance(value, Markup):
        return str(value)
    text = visible(value)  # before the mention breakers below add their own zero-width spaces
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
