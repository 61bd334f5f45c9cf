"""Held-out evaluation data: read from a path the grading environment provides, never from a PR.

``$GRADER_HELDOUT_DIR/<assignment-id>.npz`` (a runner secret or a file on the runner) replaces the
public split that ships in the repository; the result says which one was used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from grader.errors import ConfigError

HELDOUT_ENV = "GRADER_HELDOUT_DIR"


@dataclass(frozen=True)
class EvaluationFile:
    """The evaluation data as a job names it: a folder (by name and host path) and a path inside it."""

    folder: str  # "references" (the public split) or "heldout" (the runner's secret folder)
    root: Path
    path: str
    split: str  # "public" or "held-out"

    @property
    def host_path(self) -> Path:
        return self.root / self.path


def evaluation_file(assignment_id: str, references: Path, public: str) -> EvaluationFile:
    """The held-out split where the runner provides one, else the public one under ``references``."""
    folder = os.environ.get(HELDOUT_ENV)
    if not folder:
        return EvaluationFile("references", references, public, "public")
    found = EvaluationFile("heldout", Path(folder), f"{assignment_id}.npz", "held-out")
    if not found.host_path.is_file():
        raise ConfigError(f"{HELDOUT_ENV} is set but {found.host_path} does not exist")
    return found


def evaluation_data(assignment_id: str, public: Path) -> tuple[Path, str]:
    """The data to evaluate on and its name ('held-out' or 'public')."""
    found = evaluation_file(assignment_id, public.parent, public.name)
    return found.host_path, found.split
