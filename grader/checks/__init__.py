"""Checks: assignment thresholds applied to evidence and measurements -> status, points, message.

A rule is a function ``(params, ctx) -> Outcome`` registered by name with the pydantic model of
its parameters; ``assignment.yaml`` picks a rule and its parameters for each check, and
``prepare`` binds and validates them before anything runs. The shared rules live in
``grader.checks.rules``; an assignment that needs more adds a small ``checker.py`` in its folder,
which imports only from ``grader.checks.api``.
"""

from __future__ import annotations

from grader.checks.engine import (  # noqa: F401
    BoundCheck,
    CheckContext,
    Outcome,
    evaluate,
    load_checker,
    prepare,
    register,
    rule_names,
    skipped_all,
    totals,
    validate,
)
from grader.checks.rules import behaviour as _behaviour  # noqa: F401  (registers the shared rules)
from grader.checks.rules import comparison as _comparison  # noqa: F401
from grader.checks.rules import compression as _compression  # noqa: F401
