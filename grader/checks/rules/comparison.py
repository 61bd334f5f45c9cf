"""Shared rules that hold measured figures against what was asked or claimed: a complete set of
baseline measurements, the team's own reported figures, a smaller model, beating a reference."""

from __future__ import annotations

from typing import Any

from grader.config.assignment import CheckSpec
from grader.checks.engine import CheckContext, Outcome, register
from grader.checks.rules.compression import _fmt, favourable, linear
from grader.grading.evidence import weight_shapes


def _value(ctx: CheckContext, metric: str) -> float | None:
    figure = ctx.figures.get(metric)
    return None if figure is None else figure.value


def _label(item: dict[str, Any]) -> str:
    return str(item.get("label", item["metric"]))


@register("measured")
def measured(spec: CheckSpec, ctx: CheckContext) -> Outcome:
    """Every listed figure was measured (``optional`` ones may be missing); result.json keeps them all."""
    required = spec.params.get("metrics", [])
    optional = spec.params.get("optional", [])
    found = {item["metric"]: ctx.figures.get(item["metric"]) for item in [*required, *optional]}
    facts = {k: (v.model_dump(exclude_none=True) if v else None) for k, v in found.items()}
    missing = [_label(i) for i in required if found[i["metric"]] is None or found[i["metric"]].value is None]
    shown = "; ".join(f"{_label(i)} {_fmt(found[i['metric']].value, found[i['metric']].unit)}"
                      for i in [*required, *optional]
                      if found[i["metric"]] is not None and found[i["metric"]].value is not None)
    if missing:
        frozen = [f" Model '{p.role}' fixes its batch size to {p.fixed_batch} in the file, so it was timed at that "
                  "size only; export it with a dynamic batch axis." for p in ctx.observations.probes if p.fixed_batch]
        return Outcome(1 - len(missing) / max(len(required), 1), f"Not measured: {', '.join(missing)}. "
                       f"Measured: {shown or 'nothing'}.{''.join(frozen)}", facts)
    absent = [_label(i) for i in optional if found[i["metric"]] is None or found[i["metric"]].value is None]
    note = f" Not measured (optional): {', '.join(absent)}." if absent else ""
    return Outcome(1.0, f"Measured on the grading machine: {shown}.{note}", facts)


def _matches(reported: float, measured: float, item: dict[str, Any]) -> str | None:
    """The unit the reported figure matches in ('' for the figure's own), or None."""
    atol, rtol = float(item.get("atol", 0.0)), float(item.get("rtol", 0.0))
    for unit, scale in {"": 1.0, **item.get("also", {})}.items():
        target = measured * float(scale)
        if abs(reported - target) <= atol + rtol * abs(target):
            return unit
    return None


@register("reported")
def reported(spec: CheckSpec, ctx: CheckContext) -> Outcome:
    """The team's own figures (``reported:`` in submission.yaml) against the measured ones.

    Items marked ``informational`` (latency: the hardware differs) are shown side by side and not
    scored; the others must agree within ``atol + rtol * |measured|``, in the figure's unit or one
    of the ``also`` units (e.g. MB as well as MiB).
    """
    items = spec.params.get("items", [])
    lines, scored, agreed = [], 0, 0
    facts: dict[str, Any] = {}
    for item in items:
        key, label = item["key"], _label(item)
        value = ctx.submission.reported.get(key)
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        measured_value = _value(ctx, item["metric"])
        unit = ctx.figures[item["metric"]].unit if item["metric"] in ctx.figures else ""
        facts[key] = {"reported": value, "measured": measured_value}
        if item.get("informational"):
            shown = "not reported" if number is None else f"you reported {_fmt(number, unit)}"
            lines.append(f"{label}: {shown}, the grading machine measured {_fmt(measured_value, unit)} "
                         "(hardware differs: shown, not scored)")
            continue
        scored += 1
        if number is None:
            lines.append(f"{label}: not reported (add reported: {{{key}: ...}} to submission.yaml)")
        elif measured_value is None:
            lines.append(f"{label}: could not be measured here")
        else:
            match = _matches(number, measured_value, item)
            if match is None:
                lines.append(f"{label}: you reported {_fmt(number, unit)}, the file measures "
                             f"{_fmt(measured_value, unit)}")
            else:
                agreed += 1
                lines.append(f"{label}: {_fmt(number, match or unit)} agrees with the measured "
                             f"{_fmt(measured_value, unit)}")
    if not scored:
        return Outcome(None, "Nothing to compare. " + "; ".join(lines), facts)
    return Outcome(agreed / scored, "; ".join(lines) + ".", facts)


@register("smaller")
def smaller(spec: CheckSpec, ctx: CheckContext) -> Outcome:
    """Parameters and, where both can be counted, MACs of ``model`` at most ``max_fraction`` of ``reference``'s."""
    role, reference = spec.params.get("model", "student"), spec.params.get("reference", "teacher")
    key = f"{role}_vs_{reference}"
    limit, zero = float(spec.params.get("max_fraction", 0.5)), float(spec.params.get("zero_fraction", 1.0))
    params = _value(ctx, f"{key}.params_fraction")
    macs = _value(ctx, f"{key}.macs_fraction")
    models = ctx.observations.models
    facts = {"params_fraction": params, "macs_fraction": macs, "max_fraction": limit,
             f"{role}.params": _value(ctx, f"{role}.params"), f"{reference}.params": _value(ctx, f"{reference}.params"),
             f"{role}.macs": _value(ctx, f"{role}.macs"), f"{reference}.macs": _value(ctx, f"{reference}.macs")}
    if params is None:
        return Outcome(None, f"The parameter counts of '{role}' and '{reference}' could not be compared.", facts)
    parts = [f"'{role}' has {params:.1%} of '{reference}''s parameters "
             f"({_fmt(facts[f'{role}.params'])} vs {_fmt(facts[f'{reference}.params'])})"]
    fractions = [params]
    if macs is not None:
        fractions.append(macs)
        parts.append(f"{macs:.1%} of its MACs per sample ({_fmt(facts[f'{role}.macs'])} vs "
                     f"{_fmt(facts[f'{reference}.macs'])})")
    else:
        why = models[role].macs_note if role in models and models[role].macs_per_sample is None else \
            (models[reference].macs_note if reference in models else "")
        parts.append(f"MACs not compared ({why or 'not computable'})")
    worst = max(fractions)
    score = linear(-worst, -limit, -zero)
    return Outcome(score, "; ".join(parts) + f" (needs <= {limit:.0%} for full marks).", facts)


@register("beats_reference")
def beats_reference(spec: CheckSpec, ctx: CheckContext) -> Outcome:
    """``model`` beats the course's ``reference`` of the same architecture on a figure measured in this run.

    The architectures must match in the files themselves (the same weight shapes), so the
    comparison isolates the training recipe (e.g. distillation against training from scratch).
    """
    role, reference = spec.params.get("model", "student"), spec.params.get("reference", "scratch")
    metric = spec.params.get("metric", "heldout_accuracy")
    margin = float(spec.params.get("margin", 0.0))
    models = ctx.observations.models
    if reference in ctx.observations.unavailable or reference not in models:
        why = ctx.observations.unavailable.get(reference, "it was not loaded")
        return Outcome(None, f"The course's '{reference}' model could not run on these inputs ({why}).")
    if role not in models:
        return Outcome(None, f"'{role}' was not loaded.")
    if weight_shapes(models[role].evidence) != weight_shapes(models[reference].evidence):
        return Outcome(None, f"Not applicable: '{role}' does not have the architecture of the course's "
                             f"'{reference}' model ({spec.params.get('architecture', 'see the README')}), so the two "
                             "cannot be compared fairly.")
    ours, theirs = ctx.figures.get(f"{role}.{metric}"), ctx.figures.get(f"{reference}.{metric}")
    held = {h.role: h for h in ctx.observations.heldout}
    if ours is None or ours.value is None or theirs is None or theirs.value is None:
        why = held[role].error if role in held and held[role].error else "not measured"
        return Outcome(None, f"{metric} could not be compared ({why}).")
    facts = {f"{role}.{metric}": ours.value, f"{reference}.{metric}": theirs.value, "margin": margin}
    better = favourable(ours, True) or ours.value
    text = (f"'{role}' {metric.replace('_', ' ')} {ours.value:.2%} against {theirs.value:.2%} for the course's "
            f"'{reference}' model of the same architecture")
    if better > theirs.value + margin:
        return Outcome(1.0, f"{text}: it beats it.", facts)
    return Outcome(0.0, f"{text}: it does not beat it (needs more than {theirs.value + margin:.2%}).", facts)
