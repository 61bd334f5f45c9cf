"""Shared rules that hold measured figures against what was asked or claimed: a complete set of
baseline measurements, the team's own reported numbers, a smaller model, beating a reference."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from grader.checks.engine import CheckContext, Outcome, Params, register
from grader.checks.shared import favourable, figure_value, fmt, linear, weight_shapes


class Figure(Params):
    metric: str = Field(description="a figure name, e.g. baseline.size_mb")
    label: str = ""

    @property
    def shown(self) -> str:
        return self.label or self.metric


class MeasuredParams(Params):
    metrics: list[Figure] = Field(description="figures that must be measured")
    optional: list[Figure] = Field([], description="figures shown when measured, never required")


@register("measured", MeasuredParams)
def measured(params: MeasuredParams, ctx: CheckContext) -> Outcome:
    """Every listed figure was measured (``optional`` ones may be missing); result.json keeps them all."""
    required, optional = params.metrics, params.optional
    found = {item.metric: ctx.figures.get(item.metric) for item in [*required, *optional]}
    facts = {k: (v.model_dump(exclude_none=True) if v else None) for k, v in found.items()}

    def absent(item: Figure) -> bool:
        return found[item.metric] is None or found[item.metric].value is None

    missing = [i.shown for i in required if absent(i)]
    shown = "; ".join(
        f"{i.shown} {fmt(found[i.metric].value, found[i.metric].unit)}" for i in [*required, *optional] if not absent(i)
    )
    if missing:
        frozen = [
            f" Model '{p.role}' fixes its batch size to {p.fixed_batch} in the file, so it was timed at that "
            "size only; export it with a dynamic batch axis."
            for p in ctx.observations.probes
            if p.fixed_batch
        ]
        return Outcome(
            1 - len(missing) / max(len(required), 1),
            f"Not measured: {', '.join(missing)}. Measured: {shown or 'nothing'}.{''.join(frozen)}",
            facts,
        )
    not_measured = [i.shown for i in optional if absent(i)]
    note = f" Not measured (optional): {', '.join(not_measured)}." if not_measured else ""
    return Outcome(1.0, f"Measured on the grading machine: {shown}.{note}", facts)


class ReportedItem(Params):
    key: str = Field(description="the key under reported: in submission.yaml")
    metric: str = Field(description="the measured figure it is held against")
    label: str = ""
    atol: float = Field(0.0, ge=0)
    rtol: float = Field(0.0, ge=0)
    also: dict[str, float] = Field({}, description="other units it may be reported in: unit -> scale")
    informational: bool = Field(False, description="shown next to the measured figure, never scored")


class ReportedParams(Params):
    items: list[ReportedItem]


def _matches(reported: float, measured: float, item: ReportedItem) -> str | None:
    """The unit the reported figure matches in ('' for the figure's own), or None."""
    for unit, scale in {"": 1.0, **item.also}.items():
        target = measured * float(scale)
        if abs(reported - target) <= item.atol + item.rtol * abs(target):
            return unit
    return None


@register("reported", ReportedParams)
def reported(params: ReportedParams, ctx: CheckContext) -> Outcome:
    """The team's own numbers (``reported:`` in submission.yaml) against the measured ones.

    Items marked ``informational`` (latency: the hardware differs) are shown side by side and not
    scored; the others must agree within ``atol + rtol * |measured|``, in the figure's unit or one
    of the ``also`` units (e.g. MB as well as MiB).
    """
    lines, scored, agreed = [], 0, 0
    facts: dict[str, Any] = {}
    for item in params.items:
        key, label = item.key, item.label or item.metric
        value = ctx.submission.reported.get(key)
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        measured_value = figure_value(ctx, item.metric)
        unit = ctx.figures[item.metric].unit if item.metric in ctx.figures else ""
        facts[key] = {"reported": value, "measured": measured_value}
        if item.informational:
            shown = "not reported" if number is None else f"you reported {fmt(number, unit)}"
            lines.append(
                f"{label}: {shown}, the grading machine measured {fmt(measured_value, unit)} "
                "(hardware differs: shown, not scored)"
            )
            continue
        scored += 1
        if number is None:
            lines.append(f"{label}: not reported (add reported: {{{key}: ...}} to submission.yaml)")
        elif measured_value is None:
            lines.append(f"{label}: could not be measured here")
        else:
            match = _matches(number, measured_value, item)
            if match is None:
                lines.append(
                    f"{label}: you reported {fmt(number, unit)}, the file measures {fmt(measured_value, unit)}"
                )
            else:
                agreed += 1
                lines.append(
                    f"{label}: {fmt(number, match or unit)} agrees with the measured {fmt(measured_value, unit)}"
                )
    if not scored:
        return Outcome(None, "Nothing to compare. " + "; ".join(lines), facts)
    return Outcome(agreed / scored, "; ".join(lines) + ".", facts)


class SmallerParams(Params):
    model: str = "student"
    reference: str = "teacher"
    max_fraction: float = Field(0.5, gt=0, description="params and MACs at most this share of the reference's")
    zero_fraction: float = Field(1.0, gt=0)


@register("smaller", SmallerParams)
def smaller(params: SmallerParams, ctx: CheckContext) -> Outcome:
    """Parameters and, where both can be counted, MACs of ``model`` at most ``max_fraction`` of ``reference``'s."""
    role, reference = params.model, params.reference
    key = f"{role}_vs_{reference}"
    limit, zero = params.max_fraction, params.zero_fraction
    fraction_of_params = figure_value(ctx, f"{key}.params_fraction")
    macs = figure_value(ctx, f"{key}.macs_fraction")
    models = ctx.observations.models
    facts = {
        "params_fraction": fraction_of_params,
        "macs_fraction": macs,
        "max_fraction": limit,
        **{f"{r}.{n}": figure_value(ctx, f"{r}.{n}") for n in ("params", "macs") for r in (role, reference)},
    }
    if fraction_of_params is None:
        return Outcome(None, f"The parameter counts of '{role}' and '{reference}' could not be compared.", facts)
    parts = [
        f"'{role}' has {fraction_of_params:.1%} of '{reference}''s parameters "
        f"({fmt(facts[f'{role}.params'])} vs {fmt(facts[f'{reference}.params'])})"
    ]
    fractions = [fraction_of_params]
    if macs is not None:
        fractions.append(macs)
        parts.append(
            f"{macs:.1%} of its MACs per sample ({fmt(facts[f'{role}.macs'])} vs {fmt(facts[f'{reference}.macs'])})"
        )
    else:
        why = (
            models[role].macs_note
            if role in models and models[role].macs_per_sample is None
            else (models[reference].macs_note if reference in models else "")
        )
        parts.append(f"MACs not compared ({why or 'not computable'})")
    worst = max(fractions)
    score = linear(-worst, -limit, -zero)
    return Outcome(score, "; ".join(parts) + f" (needs <= {limit:.0%} for full marks).", facts)


class BeatsReferenceParams(Params):
    model: str = "student"
    reference: str = "scratch"
    metric: str = Field("heldout_accuracy", description="a per-model figure name, without the role")
    margin: float = 0.0
    architecture: str = Field("see the README", description="the shared architecture, named in messages")


@register("beats_reference", BeatsReferenceParams)
def beats_reference(params: BeatsReferenceParams, ctx: CheckContext) -> Outcome:
    """``model`` beats the course's ``reference`` of the same architecture on a figure measured in this run.

    The architectures must match in the files themselves (the same weight shapes), so the
    comparison isolates the training recipe (e.g. distillation against training from scratch).
    """
    role, reference, metric, margin = params.model, params.reference, params.metric, params.margin
    models = ctx.observations.models
    if reference in ctx.observations.unavailable or reference not in models:
        why = ctx.observations.unavailable.get(reference, "it was not loaded")
        return Outcome(None, f"The course's '{reference}' model could not run on these inputs ({why}).")
    if role not in models:
        return Outcome(None, f"'{role}' was not loaded.")
    if weight_shapes(models[role].evidence) != weight_shapes(models[reference].evidence):
        return Outcome(
            None,
            f"Not applicable: '{role}' does not have the architecture of the course's "
            f"'{reference}' model ({params.architecture}), so the two cannot be compared fairly.",
        )
    ours, theirs = ctx.figures.get(f"{role}.{metric}"), ctx.figures.get(f"{reference}.{metric}")
    held = {h.role: h for h in ctx.observations.heldout}
    if ours is None or ours.value is None or theirs is None or theirs.value is None:
        why = held[role].error if role in held and held[role].error else "not measured"
        return Outcome(None, f"{metric} could not be compared ({why}).")
    facts = {f"{role}.{metric}": ours.value, f"{reference}.{metric}": theirs.value, "margin": margin}
    better = favourable(ours, True) or ours.value
    text = (
        f"'{role}' {metric.replace('_', ' ')} {ours.value:.2%} against {theirs.value:.2%} for the course's "
        f"'{reference}' model of the same architecture"
    )
    if better > theirs.value + margin:
        return Outcome(1.0, f"{text}: it beats it.", facts)
    return Outcome(0.0, f"{text}: it does not beat it (needs more than {theirs.value + margin:.2%}).", facts)
