"""``Problem``: one thing the student must fix, and how. The one shape of "the student's fault".

The host's vetting, the sandboxed worker and the service track all say what went wrong with the
same fields, so a problem travels from where it was found into ``result.json`` unchanged:
``kind`` (a short machine word: manifest, pickle, load, time_limit, ...), ``message`` (what was
found), ``hint`` (how to fix it) and ``field`` (where in submission.yaml, e.g. ``team`` or
``models.candidate``, when a field is to blame).
"""

from __future__ import annotations

from grader.contracts.base import Strict


class Problem(Strict):
    """Why a submission was rejected, or (in a graded result) what cost it points and how to fix
    that, phrased for the student."""

    kind: str
    message: str
    hint: str = ""
    field: str | None = None

    @property
    def role(self) -> str | None:
        """The model role a ``models.<role>`` field names (the model at fault)."""
        return self.field.removeprefix("models.") if self.field and self.field.startswith("models.") else None


def model_field(role: str | None) -> str | None:
    """The submission.yaml field that names model ``role``."""
    return f"models.{role}" if role else None
