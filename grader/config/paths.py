"""Where the course repository's files are: the checkout the grader runs from, unless the
environment names another place (``$GRADER_ASSIGNMENTS``, ``$GRADER_REFERENCES``, ...).

One module, so every stage finds ``assignments/``, ``reference/``, ``course.yaml`` and
``roster.yaml`` the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds the ``grader`` package


def assignments_root() -> Path:
    """Where assignment folders live: ``$GRADER_ASSIGNMENTS`` or the repository's own folder."""
    env = os.environ.get("GRADER_ASSIGNMENTS")
    return Path(env) if env else REPO_ROOT / "assignments"


def references_root() -> Path:
    """Where trusted course models and data live: ``$GRADER_REFERENCES`` or the repository's ``reference/``."""
    env = os.environ.get("GRADER_REFERENCES")
    return Path(env) if env else REPO_ROOT / "reference"
