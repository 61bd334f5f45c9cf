"""The check engine: looks up each check's rule, scores it, and turns a gate failure into skips."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from grader.config.assignment import Assignment, CheckSpec
from grader.errors import ConfigError
from grader.grading.evidence import EvidenceSummary, summarize
from grader.intake.manifest import Submission
from grader.contracts.observations import Estimate, Observations
from grader.contracts.result import Chart, CheckResult, CheckStatus


@dataclass
class CheckContext:
    assignment: Assignment
    submission: Submission
    observations: Observations
    figures: dict[str, Estimate]
    summaries: dict[str, EvidenceSummary] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.summaries = {role: summarize(m.evidence) for role, m in self.observations.models.items()}


@dataclass
class Outcome:
    """``fraction`` of the check's points earned (0..1); ``None`` means the check was skipped.

    ``pending`` marks a skip that is nobody's fault: the check cannot run on this machine (no
    GPU, no TensorRT). Its points then count neither for nor against the student here; the
    grading runner, which has the hardware, decides them.
    """

    fraction: float | None
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    pending: bool = False
    chart: Chart | None = None


Rule = Callable[[CheckSpec, CheckContext], Outcome]
_RULES: dict[str, Rule] = {}


def register(name: str) -> Callable[[Rule], Rule]:
    def decorate(func: Rule) -> Rule:
        _RULES[name] = func
        return func

    return decorate


def rule_names() -> list[str]:
    return sorted(_RULES)


def load_checker(assignment: Assignment, folder: Path) -> None:
    """Import the assignment's own checker module (trusted: it comes from the base branch)."""
    if not assignment.checker:
        return
    path = folder / assignment.checker
    name = f"grader_assignment_{assignment.id.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import checker {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up by name
    spec.loader.exec_module(module)


def _status(fraction: float | None) -> CheckStatus:
    if fraction is None:
        return CheckStatus.SKIPPED
    if fraction >= 0.999:
        return CheckStatus.PASS
    return CheckStatus.PARTIAL if fraction > 0 else CheckStatus.FAIL


def _result(spec: CheckSpec, outcome: Outcome) -> CheckResult:
    fraction = None if outcome.fraction is None else min(max(outcome.fraction, 0.0), 1.0)
    status = _status(fraction)
    message = outcome.message
    if status in (CheckStatus.PARTIAL, CheckStatus.FAIL) and spec.fix:
        message = f"{message} How to fix: {spec.fix}"
    return CheckResult(
        id=spec.id, title=spec.title, status=status, gate=spec.gate, bonus=spec.bonus,
        pending=outcome.pending and fraction is None,
        points=round((fraction or 0.0) * spec.points, 2), max_points=spec.points,
        message=message, evidence=outcome.evidence, chart=outcome.chart,
    )


def evaluate(ctx: CheckContext) -> list[CheckResult]:
    """Run every check in order; after a failed gate the rest are skipped with the reason."""
    results: list[CheckResult] = []
    gate_failed: str | None = None
    for spec in ctx.assignment.checks:
        if gate_failed:
            results.append(_result(spec, Outcome(None, f"Not graded because check '{gate_failed}' failed.")))
            continue
        rule = _RULES.get(spec.rule)
        if rule is None:
            raise ConfigError(f"check '{spec.id}' uses unknown rule '{spec.rule}' (known: {', '.join(rule_names())})")
        result = _result(spec, rule(spec, ctx))
        results.append(result)
        if spec.gate and result.status is not CheckStatus.PASS:
            gate_failed = spec.id
    return results


def skipped_all(assignment: Assignment, reason: str) -> list[CheckResult]:
    """Every check skipped: used when the submission was rejected before anything ran."""
    return [_result(spec, Outcome(None, reason)) for spec in assignment.checks]


def totals(checks: list[CheckResult]) -> dict[str, float]:
    """Score, max score, bonus and pending points of a list of check results (see ``Result``)."""
    return {
        "score": round(sum(c.points for c in checks), 2),
        "max_score": round(sum(c.max_points for c in checks if not c.bonus and not c.pending), 2),
        "bonus_points": round(sum(c.points for c in checks if c.bonus), 2),
        "pending_points": round(sum(c.max_points for c in checks if c.pending and not c.bonus), 2),
    }
