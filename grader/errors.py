"""Exceptions that carry a message a student can act on.

A ``SubmissionError`` is always the student's to fix: the grader turns it into a ``rejected``
result with exit code 3. Anything else escaping the pipeline is the grader's own fault (exit 4).
"""

from __future__ import annotations


class SubmissionError(Exception):
    """The submission cannot be graded as it stands; ``hint`` says how to fix it."""

    def __init__(self, message: str, hint: str = "", kind: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.kind = kind

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class ConfigError(Exception):
    """An assignment file written by course staff is wrong (not the student's fault)."""


class CIUsageError(Exception):
    """A ``grader ci`` command was started without what it needs (event file, token, environment)."""
