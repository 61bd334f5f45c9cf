"""The shared rules every assignment can use from YAML."""

from __future__ import annotations

import re
from typing import Any

from grader.config.assignment import CheckSpec
from grader.checks.engine import CheckContext, Outcome, register
from grader.grading.evidence import largest_float_weights, layer_sparsity
from grader.grading.figures import pair_key
from grader.contracts.observations import Estimate


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text}{'' if unit in ('', 'x') else ' '}{unit}" if unit else text


def linear(value: float, full: float, zero: float) -> float:
    """1 at ``full`` or beyond, 0 at ``zero`` or beyond the other way, linear in between."""
    if full == zero:
        return 1.0 if value >= full else 0.0
    return min(max((value - zero) / (full - zero), 0.0), 1.0)


def favourable(estimate: Estimate, higher_is_better: bool) -> float | None:
    """The end of the 95% interval most favourable to the student (the value if none).

    A figure within noise of a threshold then gets the benefit of the doubt every time, so a
    rerun cannot flip the verdict.
    """
    if estimate.value is None:
        return None
    bound = estimate.high if higher_is_better else estimate.low
    return estimate.value if bound is None else bound


@register("loads")
def loads(spec: CheckSpec, ctx: CheckContext) -> Outcome:
    failure = ctx.observations.failure
    if failure is not None:
        message = f"{failure.message}. {failure.hint}".strip()
        return Outcome(0.0, message, {"failure": failure.kind, "role": failure.role})
    loaded = {role: m.format for role, m in ctx.observations.models.items()}
    described = ", ".join(f"{role} ({fmt})" for role, fmt in loaded.items())
    return Outcome(1.0, f"All models loaded and ran on the inputs: {described}.", {"formats": loaded})


def _criterion(crit: dict[str, Any], ctx: CheckContext) -> tuple[float | None, str, dict[str, Any]]:
    key = str(crit["metric"])
    estimate = ctx.figures.get(key)
    label = crit.get("label", key)
    if estimate is None or estimate.value is None:
        return None, f"{label}: not measured", {key: None}
    full, zero = float(crit["full"]), float(crit["zero"])
    higher = full >= zero
    used = favourable(estimate, higher) if crit.get("use_interval", True) else estimate.value
    assert used is not None
    fraction = linear(used, full, zero) if higher else linear(-used, -full, -zero)
    interval = ""
    if estimate.low is not None and estimate.high is not None:
        interval = f" (95% CI {_fmt(estimate.low)}-{_fmt(estimate.high)})"
    need = f"{'>=' if higher else '<='} {_fmt(full, estimate.unit)} for full marks"
    text = f"{label} {_fmt(estimate.value, estimate.unit)}{interval}, needs {need}"
    return fraction, text, {key: estimate.model_dump(exclude_none=True), f"{key}.full": full, f"{key}.zero": zero}


@register("thresholds")
def thresholds(spec: CheckSpec, ctx: CheckContext) -> Outcome:
    """Every criterion scored linearly between ``zero`` and ``full``; the check gets the lowest."""
    criteria = spec.params.get("criteria") or [spec.params]
    scored = [_criterion(c, ctx) for c in criteria]
    fractions = [f for f, _, _ in scored if f is not None]
    evidence: dict[str, Any] = {}
    for _, _, ev in scored:
        evidence.update(ev)
    texts = "; ".join(t for _, t, _ in scored)
    if not fractions:
        if spec.params.get("missing") == "fail":  # the figure is required: not measuring it is a shortfall
            return Outcome(0.0, f"Could not be judged: {texts}.", evidence)
        return Outcome(None, f"Nothing to judge: {texts}.", evidence)
    note = " ".join(str(spec.params.get("note", "")).split())
    return Outcome(min(fractions), f"{texts[0].upper()}{texts[1:]}.{' ' + note if note else ''}", evidence)


def claimed_bits(claim: Any) -> int | None:
    """'int8' -> 8, 'int4' -> 4, 8 -> 8; None when the claim names no bit width."""
    if isinstance(claim, bool) or claim is None:
        return None
    if isinstance(claim, (int, float)):
        return int(claim)
    match = re.search(r"(\d+)", str(claim))
    return int(match.group(1)) if match else None


@register("quantized")
def quantized(spec: CheckSpec, ctx: CheckContext) -> Outcome:
    """Share of weight elements *stored* as integers of <= the claimed bits (fake Q/DQ counts as float)."""
    role = spec.params.get("model", "candidate")
    summary, evidence = ctx.summaries[role], ctx.observations.models[role].evidence
    bits_claim = claimed_bits(ctx.submission.claims.get(spec.params.get("claim", "quantization")))
    max_bits = min(bits_claim or 8, int(spec.params.get("max_bits", 8)))
    fraction = summary.quantized_fraction
    floats = [f"{w.name} ({w.stored_dtype}, {w.numel:,} values)" for w in largest_float_weights(evidence, 3)]
    facts = {
        "quantized_fraction": round(fraction, 4),
        "quantized_elements": summary.quantized_elements,
        "weight_elements": summary.weight_elements,
        "stored_bits": summary.min_quantized_bits,
        "claimed_bits": bits_claim,
        "largest_float_weights": floats,
        "notes": evidence.notes,
    }
    full, zero = float(spec.params.get("full", 0.9)), float(spec.params.get("zero", 0.5))
    score = linear(fraction, full, zero)
    message = f"{fraction:.1%} of weight values are stored as integers of <= 8 bits (needs {full:.0%} for full marks)."
    if summary.min_quantized_bits and summary.min_quantized_bits > max_bits:
        score = 0.0
        message = f"You claimed {max_bits}-bit weights, but the file stores {summary.min_quantized_bits}-bit integers."
    if score < 1 and floats:
        message += f" Still float: {', '.join(floats)}."
    if score < 1 and any("fake quantization" in n for n in evidence.notes):
        message += " Weights wrapped in QuantizeLinear/DequantizeLinear are still stored as float (fake quantization)."
    return Outcome(score, message, facts)


@register("pruned")
def pruned(spec: CheckSpec, ctx: CheckContext) -> Outcome:
    """Exact zeros (or removed channels) against the baseline, measured, then held against the claim."""
    role, ref = spec.params.get("model", "candidate"), spec.params.get("reference", "baseline")
    figure = ctx.figures.get(f"{pair_key(ref, role)}.effective_sparsity")
    sparsity = figure.value if figure and figure.value is not None else ctx.summaries[role].sparsity
    claim = ctx.submission.claims.get(spec.params.get("claim", "sparsity"))
    claimed = float(claim) if isinstance(claim, (int, float)) and not isinstance(claim, bool) else None
    minimum, zero = float(spec.params.get("min", 0.5)), float(spec.params.get("zero", 0.25))
    tolerance = float(spec.params.get("claim_tolerance", 0.02))
    required = max(minimum, (claimed - tolerance) if claimed is not None else minimum)
    score = linear(sparsity, required, zero)
    summary = ctx.summaries[role]
    facts = {
        "effective_sparsity": round(sparsity, 4),
        "zero_fraction_in_file": round(summary.sparsity, 4),
        "near_zero_fraction": round(summary.near_zero_fraction, 4),
        "claimed": claimed,
        "required": round(required, 4),
        "layers": layer_sparsity(ctx.observations.models[role].evidence)[:50],
    }
    message = f"{sparsity:.1%} of the prunable weights are exact zeros or removed (needs {required:.0%})."
    if claimed is not None and sparsity < claimed - tolerance:
        message += f" You claimed {claimed:.0%}, but the file shows {sparsity:.1%}."
    if summary.near_zero_fraction > 0.01:
        message += (f" {summary.near_zero_fraction:.1%} of the weights are tiny but not exactly zero: pruning must "
                    "store exact zeros (e.g. torch.nn.utils.prune.remove after pruning, or multiply by the mask).")
    return Outcome(score, message, facts)
