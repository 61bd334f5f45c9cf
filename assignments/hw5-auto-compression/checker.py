"""hw5's rules: the search log is real, the chosen model is on its Pareto front, its figures reproduce.

The log is parsed inside the sandbox (``grader.worker.searchlog``) and arrives as validated data; the
dominance maths is shared (``grader.checks.pareto``); the measured figures are the shared ones
(``candidate.accuracy``, ``candidate.gzip_mb``, ...). This module maps logged objectives to those
figures, as ``assignment.yaml``'s ``search`` block says, and phrases the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field

from grader.checks.api import (
    Chart,
    ChartPoint,
    ChartSeries,
    CheckContext,
    ObjectiveSpec,
    Outcome,
    Params,
    SearchLog,
    Trial,
    dominators,
    linear,
    pareto_front,
    register,
)
from grader.checks.api import fmt as _fmt


class SearchLogParams(Params):
    min_trials: int = Field(10, ge=1, description="complete trials a real search needs")
    min_objectives: int = Field(2, ge=1, description="objectives a multi-objective search needs")


class LogProblem(Exception):
    """The log cannot be used as it stands; the message says why."""


@dataclass
class Study:
    log: SearchLog
    names: list[str]
    specs: list[ObjectiveSpec]

    @property
    def directions(self) -> list[str]:
        return [s.direction for s in self.specs]


def _study(ctx: CheckContext) -> Study:
    """The log with every objective mapped to a known one, or ``LogProblem``."""
    observed, search = ctx.observations.search_log, ctx.assignment.search
    if observed is None or search is None:
        raise LogProblem("no search log was read")
    if observed.log is None:
        raise LogProblem(f"the search log could not be read: {observed.error}")
    log, names = observed.log, list(observed.log.objectives)
    if "" in names:
        named = ctx.submission.claims.get("objectives")
        given = [n.strip() for n in str(named).split(",")] if isinstance(named, str) else []
        if len(given) != len(names):
            raise LogProblem(
                f"the log does not name its {len(names)} objective(s); call study.set_metric_names(["
                '...]) before optimising, or add claims: {objectives: "accuracy,gzip_mb"} (in order)'
            )
        names = given
    unknown = [n for n in names if n not in search.objectives]
    if unknown:
        raise LogProblem(
            f"unknown objective name(s) {unknown}; use names the grader can measure: {', '.join(search.objectives)}"
        )
    specs = [search.objectives[n] for n in names]
    for name, spec, logged in zip(names, specs, log.directions):
        if logged is not None and logged != spec.direction:
            raise LogProblem(f"the study says '{name}' is to {logged}, but for {name} {spec.direction} is better")
    return Study(log, names, specs)


@register("search_log", SearchLogParams)
def search_log(params: SearchLogParams, ctx: CheckContext) -> Outcome:
    min_trials, min_objectives = params.min_trials, params.min_objectives
    try:
        study = _study(ctx)
    except LogProblem as problem:
        return Outcome(0.0, f"{str(problem)[0].upper()}{str(problem)[1:]}.")
    trials = study.log.trials
    logged = study.log.complete()
    complete = [t for t in logged if t.clocked()]
    states = {s: sum(t.state == s for t in trials) for s in ("PRUNED", "FAIL")}
    untimed = sum(t.duration_s is None for t in logged)
    instant = len(logged) - len(complete) - untimed
    facts = {
        "trials": len(trials),
        "complete": len(complete),
        "discounted_no_times": untimed,
        "discounted_zero_duration": instant,
        **{s.lower(): n for s, n in states.items()},
        "objectives": dict(zip(study.names, study.directions)),
        "source": study.log.source,
    }
    described = ", ".join(f"{n} ({d})" for n, d in zip(study.names, study.directions))
    text = (
        f"{len(complete)} complete trial(s) of {len(trials)} logged ({states['PRUNED']} pruned, "
        f"{states['FAIL']} failed) over {len(study.names)} objective(s): {described}"
    ) + _discounted(instant, untimed)
    if len(study.names) < min_objectives:
        return Outcome(0.0, f"{text}; a multi-objective search needs at least {min_objectives} objectives.", facts)
    if len(complete) < min_trials:
        return Outcome(
            linear(len(complete), min_trials, min_trials / 2),
            f"{text}; needs at least {min_trials} complete trials.",
            facts,
        )
    return Outcome(1.0, f"{text}.", facts)


def _discounted(instant: int, untimed: int) -> str:
    """Why complete trials were not counted as search trials: no clock could have produced them."""
    parts = []
    if instant:
        parts.append(
            f"{instant} complete trial(s) not counted: they took no time (start and completion logged at the "
            "same instant, or the completion first), as optuna.trial.create_trial / study.add_trial record them; "
            "a search runs its trials with study.optimize"
        )
    if untimed:
        parts.append(
            f"{untimed} complete trial(s) not counted: the log records no start and completion times; keep "
            "the datetime_start and datetime_complete columns study.trials_dataframe() writes"
        )
    return "".join(f" ({p})" for p in parts)


def _chosen(ctx: CheckContext, study: Study) -> Trial:
    key = ctx.assignment.search.trial_claim if ctx.assignment.search else "trial"
    number = ctx.submission.claims.get(key)
    if isinstance(number, bool) or not isinstance(number, int):
        raise LogProblem(f"say which trial the submitted model comes from: claims: {{{key}: <trial number>}}")
    trial = next((t for t in study.log.trials if t.number == number), None)
    if trial is None:
        raise LogProblem(f"the log has no trial number {number}")
    if trial not in study.log.complete():
        raise LogProblem(f"trial {number} is {trial.state.lower()}, not a complete trial with every objective")
    return trial


def _point(ctx: CheckContext, study: Study, trial: Trial) -> tuple[list[float], list[str]]:
    """The submitted model's objectives: measured here, except hardware-dependent ones (logged)."""
    point, sources = [], []
    for index, spec in enumerate(study.specs):
        figure = ctx.figures.get(spec.metric)
        if spec.hardware_dependent or figure is None or figure.value is None:
            point.append(float(trial.values[index]))
            sources.append("logged")
        else:
            point.append(float(figure.value))
            sources.append("measured")
    return point, sources


def _tolerance(spec: ObjectiveSpec, value: float) -> float:
    return max(spec.tolerance, spec.relative_tolerance * abs(value))


def _describe(study: Study, values: list[float]) -> str:
    return ", ".join(f"{n} {_fmt(v)}" for n, v in zip(study.names, values))


def _chart(study: Study, trial: Trial, point: list[float], front: list[int], logged: dict[int, list[float]]) -> Chart:
    x, y = (1, 0) if len(study.names) > 1 else (0, 0)

    def as_point(values: list[float], label: str = "") -> ChartPoint:
        return ChartPoint(x=values[x], y=values[y], label=label)

    return Chart(
        title=f"Pareto front of the logged trials ({study.names[y]} against {study.names[x]})",
        x_label=f"{study.names[x]} ({study.directions[x]})",
        y_label=f"{study.names[y]} ({study.directions[y]})",
        series=[
            ChartSeries(name="logged trials", table=False, points=[as_point(v) for v in logged.values()][:10_000]),
            ChartSeries(name="Pareto front", points=[as_point(logged[n], f"#{n}") for n in front][:200]),
            ChartSeries(
                name=f"your model (trial {trial.number}, measured)", points=[as_point(point, f"#{trial.number}")]
            ),
        ],
    )


@register("pareto")
def pareto(_: Params, ctx: CheckContext) -> Outcome:
    """No logged trial beats the submitted model on every objective, after its tolerance."""
    try:
        study = _study(ctx)
        trial = _chosen(ctx, study)
    except LogProblem as problem:
        return Outcome(0.0, f"Cannot place the model on the front: {problem}.")
    point, sources = _point(ctx, study, trial)
    logged = {t.number: [float(v) for v in t.values] for t in study.log.complete()}
    front = pareto_front(logged, study.directions)
    tolerances = [_tolerance(s, v) for s, v in zip(study.specs, point)]
    others = {n: v for n, v in logged.items() if n != trial.number}
    beaten_by = dominators(point, tolerances, others, study.directions)
    facts = {
        "chosen_trial": trial.number,
        "point": dict(zip(study.names, point)),
        "sources": dict(zip(study.names, sources)),
        "tolerances": dict(zip(study.names, tolerances)),
        "front": front,
        "dominated_by": beaten_by[:20],
    }
    chart = _chart(study, trial, point, front, logged)
    where = f"Your model (trial {trial.number}: {_describe(study, point)})"
    hardware = [n for n, s in zip(study.names, sources) if s == "logged"]
    note = f" ({', '.join(hardware)} as logged: not comparable across machines)" if hardware else ""
    if beaten_by:
        rivals = "; ".join(f"trial {n} ({_describe(study, logged[n])})" for n in beaten_by[:3])
        return Outcome(
            0.0,
            f"{where}{note} is dominated even within tolerance by {len(beaten_by)} logged trial(s): {rivals}.",
            facts,
            chart=chart,
        )
    return Outcome(
        1.0,
        f"{where}{note} is on the Pareto front of the {len(logged)} complete trials, within "
        f"tolerance ({len(front)} trial(s) on the front).",
        facts,
        chart=chart,
    )


@register("reproduces")
def reproduces(_: Params, ctx: CheckContext) -> Outcome:
    """The chosen trial's logged objectives agree with what the grader measures on the submitted model."""
    try:
        study = _study(ctx)
        trial = _chosen(ctx, study)
    except LogProblem as problem:
        return Outcome(0.0, f"Cannot compare the logged figures: {problem}.")
    lines, compared, agreed, facts = [], 0, 0, {"chosen_trial": trial.number}
    for index, (name, objective) in enumerate(zip(study.names, study.specs)):
        logged = float(trial.values[index])
        figure = ctx.figures.get(objective.metric)
        measured = None if figure is None else figure.value
        facts[name] = {"logged": logged, "measured": measured}
        if objective.hardware_dependent:
            lines.append(
                f"{name}: logged {_fmt(logged)}, measured here {_fmt(measured)} (hardware differs: shown, not compared)"
            )
            continue
        compared += 1
        if measured is None:
            lines.append(f"{name}: could not be measured here")
            continue
        tolerance = _tolerance(objective, measured)
        if abs(logged - measured) <= tolerance:
            agreed += 1
            lines.append(f"{name}: logged {_fmt(logged)}, measured {_fmt(measured)}")
        else:
            lines.append(
                f"{name}: logged {_fmt(logged)} but measured {_fmt(measured)} (allowed difference {_fmt(tolerance)})"
            )
    if not compared:
        return Outcome(
            0.0,
            "No logged objective can be reproduced on another machine; log at least one of "
            "accuracy, size_mb, gzip_mb, params or macs. " + "; ".join(lines) + ".",
            facts,
        )
    return Outcome(agreed / compared, f"Trial {trial.number}: " + "; ".join(lines) + ".", facts)
