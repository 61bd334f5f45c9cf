"""Checks: assignment thresholds applied to evidence and measurements -> status, points, message.

A rule is a function ``(spec, ctx) -> Outcome`` registered by name; ``assignment.yaml`` picks a
rule and its parameters for each check. An assignment that needs more than the shared rules
adds a small ``checker.py`` in its folder that registers its own.
"""

from __future__ import annotations

from grader.checks.engine import CheckContext, Outcome, evaluate, register, rule_names  # noqa: F401
from grader.checks.rules import behaviour as _behaviour  # noqa: F401  (registers the shared rules)
from grader.checks.rules import comparison as _comparison  # noqa: F401
from grader.checks.rules import compression as _compression  # noqa: F401
