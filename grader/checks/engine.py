"""The check engine: a registry of rules with typed parameters, binding an assignment's checks to
them before anything is graded, then scoring each and turning a failed gate into skips.

A rule is a function ``(params, ctx) -> Outcome`` registered under a name together with the
pydantic model of its parameters (``register("quantized", QuantizedParams)``). ``prepare`` checks
every check of an assignment against the registry (unknown rule, unknown or mistyped parameter)
and fails with a ``ConfigError`` naming them all, so a staff typo is found by
``grader assignments --validate`` or before a worker starts, never after.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from grader.config.assignment import Assignment, CheckSpec
from grader.contracts.base import Strict
from grader.contracts.figures import EvidenceSummary
from grader.contracts.observations import Estimate, Observations
from grader.contracts.result import Chart, CheckResult, CheckStatus
from grader.errors import ConfigError
from grader.intake.manifest import Submission

PUBLIC_API = "grader.checks.api"


class Params(Strict):
    """Base of every rule's parameters (``params:`` of a check in assignment.yaml): unknown keys are errors."""


class NoParams(Params):
    """For rules that take no parameters."""


@dataclass
class CheckContext:
    """What a rule may read: the assignment, the manifest, the worker's observations and the
    figures derived from them (computed once by the pipeline, never again here)."""

    assignment: Assignment
    submission: Submission
    observations: Observations
    figures: dict[str, Estimate]
    summaries: dict[str, EvidenceSummary] = field(default_factory=dict)


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


P = TypeVar("P", bound=Params)
Judge = Callable[[Any, CheckContext], Outcome]


@dataclass(frozen=True)
class Rule:
    name: str
    params: type[Params]
    judge: Judge


@dataclass(frozen=True)
class BoundCheck(Generic[P]):
    """One check of an assignment, with its rule found and its parameters validated."""

    spec: CheckSpec
    rule: Rule
    params: P


_RULES: dict[str, Rule] = {}


def register(name: str, params: type[Params] = NoParams) -> Callable[[Judge], Judge]:
    """Register ``judge`` as rule ``name``; ``params`` is the model its ``params:`` must fit."""

    def decorate(judge: Judge) -> Judge:
        _RULES[name] = Rule(name, params, judge)
        return judge

    return decorate


def rule_names() -> list[str]:
    return sorted(_RULES)


def rules() -> dict[str, Rule]:
    return dict(_RULES)


def prepare(assignment: Assignment) -> list[BoundCheck]:
    """Every check bound to its rule with typed parameters; a ``ConfigError`` names every mistake."""
    bound, problems = [], []
    for spec in assignment.checks:
        rule = _RULES.get(spec.rule)
        if rule is None:
            problems.append(f"check '{spec.id}' uses unknown rule '{spec.rule}' (known: {', '.join(rule_names())})")
            continue
        try:
            bound.append(BoundCheck(spec, rule, rule.params.model_validate(spec.params)))
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"]) or "params"
                problems.append(f"check '{spec.id}' (rule '{spec.rule}'): params.{where}: {error['msg']}")
    problems += [problem for check in bound for problem in _unknown_roles(check, assignment)]
    if problems:
        raise ConfigError(f"assignment '{assignment.id}': " + "; ".join(problems))
    return bound


ROLE_PARAMS = ("model", "reference", "speed_reference")  # parameters that name a model role of the assignment


def _unknown_roles(check: BoundCheck, assignment: Assignment) -> list[str]:
    roles = set(assignment.models) | set(assignment.references) | {d.role for d in assignment.measure.derived}
    named = {name: getattr(check.params, name, None) for name in ROLE_PARAMS}
    return [
        f"check '{check.spec.id}' (rule '{check.spec.rule}'): params.{name} names role '{role}', which "
        f"this assignment does not have (roles: {', '.join(sorted(roles)) or 'none'})"
        for name, role in named.items()
        if isinstance(role, str) and role not in roles
    ]


def validate(assignment: Assignment, folder: Path) -> list[BoundCheck]:
    """Everything that can be checked before a submission is graded: the checker loads (importing
    only the public api), every rule exists and every parameter fits its rule."""
    load_checker(assignment, folder)
    return prepare(assignment)


def load_checker(assignment: Assignment, folder: Path) -> None:
    """Import the assignment's own checker module (trusted: it comes from the base branch).

    A checker may import from the grader only through ``grader.checks.api``, so the rules it adds
    stay on the same public footing as the shared ones.
    """
    if not assignment.checker:
        return
    path = folder / assignment.checker
    if not path.is_file():
        raise ConfigError(f"assignment '{assignment.id}' names checker {path}, which does not exist")
    outside = private_imports(path)
    if outside:
        raise ConfigError(
            f"{path} imports {', '.join(outside)}; a checker may import from the grader only through {PUBLIC_API}"
        )
    name = f"grader_assignment_{assignment.id.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import checker {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up by name
    spec.loader.exec_module(module)


def private_imports(path: Path) -> list[str]:
    """The ``grader`` modules a checker file imports other than the public checks api."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names = (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        found += [n for n in names if (n == "grader" or n.startswith("grader.")) and n != PUBLIC_API]
    return sorted(set(found))


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
        id=spec.id,
        title=spec.title,
        status=status,
        gate=spec.gate,
        bonus=spec.bonus,
        pending=outcome.pending and fraction is None and spec.may_be_pending,
        points=round((fraction or 0.0) * spec.points, 2),
        max_points=spec.points,
        message=message,
        evidence=outcome.evidence,
        chart=outcome.chart,
    )


def device_pending(spec: CheckSpec, ctx: CheckContext) -> Outcome | None:
    """A check that reads figures this machine could not measure on the assignment's device (no
    CUDA here): skipped, its points pending for the course's GPU runner, whatever the rule would
    make of a missing figure."""
    if not spec.may_be_pending:
        return None
    waiting = [name for name in spec.device_figures if (f := ctx.figures.get(name)) is not None and f.pending]
    if not waiting:
        return None
    why = ctx.figures[waiting[0]].note.rstrip(".")
    return Outcome(
        None,
        f"Pending: {', '.join(waiting)} {'is' if len(waiting) == 1 else 'are'} measured only on the course's GPU "
        f"runner ({why}). Its points count once it grades this commit.",
        {"pending_figures": waiting},
        pending=True,
    )


def evaluate(checks: list[BoundCheck], ctx: CheckContext) -> list[CheckResult]:
    """Run every check in order; after a failed gate the rest are skipped with the reason."""
    results: list[CheckResult] = []
    gate_failed: str | None = None
    for check in checks:
        if gate_failed:
            results.append(_result(check.spec, Outcome(None, f"Not graded because check '{gate_failed}' failed.")))
            continue
        failed = [r for r in results if r.id in check.spec.requires and r.status is CheckStatus.FAIL]
        if failed:
            titles = ", ".join(f"'{r.id}'" for r in failed)
            outcome = Outcome(
                0.0,
                f"Not credited while {titles} fails: speed or size of a model that does not compute what it "
                "is compared with is not compression.",
            )
            results.append(_result(check.spec.model_copy(update={"fix": ""}), outcome))
            continue
        result = _result(check.spec, device_pending(check.spec, ctx) or check.rule.judge(check.params, ctx))
        results.append(result)
        if check.spec.gate and result.status is not CheckStatus.PASS and not result.pending:
            gate_failed = check.spec.id
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
