"""Held-out evaluation data: read from a path the grading environment provides, never from a PR.

``$GRADER_HELDOUT_DIR/<assignment-id>.npz`` (a runner secret or a file on the runner) replaces the
public split that ships in the repository; the result says which one was used.
"""

from __future__ import annotations

import os
from pathlib import Path

from grader.errors import ConfigError

HELDOUT_ENV = "GRADER_HELDOUT_DIR"


def evaluation_data(assignment_id: str, public: Path) -> tuple[Path, str]:
    """The data to evaluate on and its name ('held-out' or 'public')."""
    folder = os.environ.get(HELDOUT_ENV)
    if not folder:
        return public, "public"
    path = Path(folder) / f"{assignment_id}.npz"
    if not path.is_file():
        raise ConfigError(f"{HELDOUT_ENV} is set but {path} does not exist")
    return path, "held-out"
