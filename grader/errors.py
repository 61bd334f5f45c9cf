"""The exceptions, and whose fault each one is. Exit codes are in ``grader.exitcodes``.

::

    Exception
    ├── SubmissionError     the student's to fix: a ``rejected`` result with its problems (exit 3).
    │                       Raised on the host (manifest, vetting, run limit) and inside the
    │                       sandboxed worker (a model that fails to load or run), always carrying
    │                       ``Problem``s that say what to fix.
    ├── ConfigError         a staff-written file is wrong (assignment.yaml, course.yaml, roster,
    │                       a missing reference model): never charged to the student.
    ├── WorkerError         the sandbox or its engine broke in a way no student file explains
    │                       (exit 4, "grader error, not charged").
    └── CIUsageError        a ``grader ci`` step started without what it needs (exit 2).
"""

from __future__ import annotations

from grader.contracts.problem import Problem


class SubmissionError(Exception):
    """The submission cannot be graded as it stands; each ``Problem`` says what to fix."""

    def __init__(self, message: str, hint: str = "", kind: str = "invalid", field: str | None = None) -> None:
        self.problems = [Problem(kind=kind, message=message, hint=hint, field=field)]
        super().__init__(str(self))

    @classmethod
    def of(cls, problems: list[Problem]) -> SubmissionError:
        """Several problems at once (a manifest with three bad fields), so they are fixed in one round trip."""
        error = cls(problems[0].message, problems[0].hint, problems[0].kind, problems[0].field)
        error.problems = list(problems)
        return error

    @property
    def problem(self) -> Problem:
        return self.problems[0]

    @property
    def message(self) -> str:
        return self.problem.message

    @property
    def hint(self) -> str:
        return self.problem.hint

    @property
    def kind(self) -> str:
        return self.problem.kind

    def __str__(self) -> str:
        return "; ".join(f"{p.message} {p.hint}".strip() for p in self.problems)


class ConfigError(Exception):
    """An assignment file written by course staff is wrong (not the student's fault)."""


class WorkerError(Exception):
    """The worker or its sandbox broke in a way no student file explains: the grader's (or its machine's) fault.

    ``log_tail`` is the end of the sandbox's log, kept apart from the message: it goes into the
    result (bounded, escaped like every student-controlled string), never to the host's stderr.
    """

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class CIUsageError(Exception):
    """A ``grader ci`` command was started without what it needs (event file, token, environment)."""
