"""The machine-readable block hidden in every PR comment, so results can be collected from GitHub.

It holds the result without per-check evidence and charts (which can be large), gzipped and base64-encoded:
the base64 alphabet has no '-' or '>', so the block cannot close its HTML comment early. A
collector must still treat a decoded block as hostile input and validate it against the schema,
and must only trust comments authored by the grader's bot.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import re
from typing import Any

from grader.contracts.result import Result

BLOCK_PREFIX = "<!-- compression-grader:result:v1 "
BLOCK_PATTERN = re.compile(r"<!-- compression-grader:result:v1 ([A-Za-z0-9+/=]+) -->")
MAX_DECODED_BYTES = 4 * 1024 * 1024


def compact(result: Result) -> dict[str, Any]:
    data = json.loads(result.to_json())
    for check in data.get("checks", []):
        check["evidence"] = {}
        check["chart"] = None
    return data


def encode(result: Result) -> str:
    payload = json.dumps(compact(result), separators=(",", ":"), sort_keys=True).encode()
    return BLOCK_PREFIX + base64.b64encode(gzip.compress(payload, 9)).decode("ascii") + " -->"


def decode(body: str) -> dict[str, Any] | None:
    """The block's JSON from a comment body, or None when there is none or it is malformed."""
    match = BLOCK_PATTERN.search(body)
    if not match:
        return None
    try:
        raw = base64.b64decode(match.group(1), validate=True)
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as handle:
            data = handle.read(MAX_DECODED_BYTES + 1)
        if len(data) > MAX_DECODED_BYTES:
            return None
        value = json.loads(data)
    except (binascii.Error, OSError, EOFError, ValueError):
        return None
    return value if isinstance(value, dict) else None
