"""The shared rules about a run and its compression: the load gate, thresholds on figures, and
the proofs that weights are really quantized or pruned."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from grader.checks.engine import CheckContext, Outcome, Params, register
from grader.checks.shared import favourable, fmt, largest_float_weights, layer_sparsity, linear
from grader.contracts.figures import pair_key
from grader.contracts.observations import TensorEvidence


@register("loads")
def loads(_: Params, ctx: CheckContext) -> Outcome:
    failure = ctx.observations.failure
    if failure is not None:
        message = f"{failure.message}. {failure.hint}".strip()
        return Outcome(0.0, message, {"failure": failure.kind, "role": failure.role})
    loaded = {role: m.format for role, m in ctx.observations.models.items()}
    described = ", ".join(f"{role} ({kind})" for role, kind in loaded.items())
    return Outcome(1.0, f"All models loaded and ran on the inputs: {described}.", {"formats": loaded})


class Criterion(Params):
    """One figure scored linearly from ``zero`` points to full points at ``full``."""

    metric: str = Field(description="a figure name, e.g. candidate_vs_baseline.size_ratio")
    label: str = ""
    full: float
    zero: float
    use_interval: bool = Field(True, description="judge the favourable end of the 95% interval, where there is one")
    applies_to: Literal["any", "classes", "values"] = Field(
        "any",
        description="classes: only where the compared outputs are [N, classes] scores (top-1 agreement, "
        "accuracy); values: only where they are not (a regressor: SNR, relative error)",
    )


class Hint(Params):
    """Advice for a shortfall that only applies to some files: shown when the check is short of
    full marks and ``model``'s graph has any of ``ops_any`` and none of ``ops_none``."""

    model: str = "candidate"
    ops_any: list[str] = Field(min_length=1)
    ops_none: list[str] = []
    text: str

    def applies(self, ctx: CheckContext) -> bool:
        model = ctx.observations.models.get(self.model)
        ops = model.evidence.op_types if model is not None else {}
        return any(ops.get(op) for op in self.ops_any) and not any(ops.get(op) for op in self.ops_none)


class ThresholdsParams(Params):
    """Either ``criteria: [...]`` or one criterion's fields inline; the check gets the lowest score."""

    criteria: list[Criterion] = []
    metric: str | None = None
    label: str = ""
    full: float | None = None
    zero: float | None = None
    use_interval: bool = True
    missing: Literal["skip", "fail"] = Field(
        "fail", description="fail (default): a figure that could not be measured costs the points, and says why; skip"
    )
    note: str = ""
    hints: list[Hint] = Field([], description="advice shown short of full marks, for the files it fits")

    @model_validator(mode="after")
    def _one_form(self) -> ThresholdsParams:
        inline = self.metric is not None or self.full is not None or self.zero is not None
        if inline and self.criteria:
            raise ValueError("give either criteria or one criterion's metric / full / zero, not both")
        if inline:
            if self.metric is None or self.full is None or self.zero is None:
                raise ValueError("an inline criterion needs metric, full and zero")
            self.criteria = [
                Criterion(
                    metric=self.metric, label=self.label, full=self.full, zero=self.zero, use_interval=self.use_interval
                )
            ]
        if not self.criteria:
            raise ValueError("needs at least one criterion")
        return self


def _applies(crit: Criterion, ctx: CheckContext) -> bool:
    if crit.applies_to == "any":
        return True
    pair = crit.metric.partition(".")[0]
    kinds = {pair_key(f.reference, f.candidate): f.output_kind for f in ctx.observations.fidelity}
    return kinds.get(pair, "classes") == crit.applies_to


def _criterion(crit: Criterion, ctx: CheckContext) -> tuple[float | None, str, dict[str, Any]]:
    key = crit.metric
    estimate = ctx.figures.get(key)
    label = crit.label or key
    if estimate is None or estimate.value is None:
        why = f" ({estimate.note})" if estimate is not None and estimate.note else ""
        return None, f"{label}: not measured{why}", {key: None}
    higher = crit.full >= crit.zero
    used = favourable(estimate, higher) if crit.use_interval else estimate.value
    assert used is not None
    fraction = linear(used, crit.full, crit.zero) if higher else linear(-used, -crit.full, -crit.zero)
    interval = ""
    if estimate.low is not None and estimate.high is not None:
        interval = f" (95% CI {fmt(estimate.low)}-{fmt(estimate.high)})"
    need = f"{'>=' if higher else '<='} {fmt(crit.full, estimate.unit)} for full marks"
    told = f" [{estimate.note}]" if estimate.note else ""  # e.g. how many timed rounds settled it
    text = f"{label} {fmt(estimate.value, estimate.unit)}{interval}, needs {need}{told}"
    return (
        fraction,
        text,
        {key: estimate.model_dump(exclude_none=True), f"{key}.full": crit.full, f"{key}.zero": crit.zero},
    )


@register("thresholds", ThresholdsParams)
def thresholds(params: ThresholdsParams, ctx: CheckContext) -> Outcome:
    """Every criterion that applies to the outputs compared, scored linearly between ``zero`` and
    ``full``; the check gets the lowest."""
    scored = [_criterion(c, ctx) for c in params.criteria if _applies(c, ctx)]
    fractions = [f for f, _, _ in scored if f is not None]
    evidence: dict[str, Any] = {}
    for _, _, ev in scored:
        evidence.update(ev)
    texts = "; ".join(t for _, t, _ in scored)
    if not scored:
        return Outcome(0.0, "None of this check's figures apply to these models' outputs.", evidence)
    if not fractions:
        if params.missing == "fail":  # not measuring a figure is a shortfall, and the message says why
            return Outcome(0.0, f"Could not be measured: {texts}.", evidence)
        return Outcome(None, f"Nothing to judge: {texts}.", evidence)
    score = min(fractions)
    advice = [params.note] + ([h.text for h in params.hints if h.applies(ctx)] if score < 1 else [])
    extra = " ".join(" ".join(a.split()) for a in advice if a.strip())
    return Outcome(score, f"{texts[0].upper()}{texts[1:]}.{' ' + extra if extra else ''}", evidence)


def claimed_bits(claim: Any) -> int | None:
    """'int8' -> 8, 'int4' -> 4, 8 -> 8; None when the claim names no bit width."""
    if isinstance(claim, bool) or claim is None:
        return None
    if isinstance(claim, (int, float)):
        return int(claim)
    match = re.search(r"(\d+)", str(claim))
    return int(match.group(1)) if match else None


class QuantizedParams(Params):
    model: str = "candidate"
    claim: str = Field("quantization", description="the claim key naming the bit width, e.g. int8")
    max_bits: int = Field(8, ge=1, le=8)
    full: float = Field(0.9, ge=0, le=1, description="share of weight elements stored as integers for full marks")
    zero: float = Field(0.5, ge=0, le=1)
    half_precision: bool = Field(
        False,
        description="fp16 / bf16 weights count as compressed too (an assignment that compresses for the GPU); "
        "off: only integers of <= max_bits count, and a claim of fp16 is not int8",
    )


HALF_CLAIMS = {"fp16", "float16", "half", "bf16", "bfloat16"}


def is_half(weight: TensorEvidence) -> bool:
    """Stored in 16-bit floating point (the file's own dtype, not a cast the graph adds later)."""
    dtype = weight.stored_dtype.lower()
    return not weight.quantized and ("float16" in dtype or "fp16" in dtype or "bf16" in dtype)


def _half_claim_note(claim: Any, params: QuantizedParams) -> str:
    """A claim of fp16 where only integers count: the file decides the points, this says why."""
    if params.half_precision or str(claim).strip().lower() not in HALF_CLAIMS:
        return ""
    return (
        f" You claimed {params.claim}: {claim}, but half-precision weights are not integer quantization: this "
        f"assignment counts only weights stored as integers of <= {params.max_bits} bits (e.g. "
        "onnxruntime.quantization.quantize_static); fp16 / bf16 count only where an assignment says so."
    )


@register("quantized", QuantizedParams)
def quantized(params: QuantizedParams, ctx: CheckContext) -> Outcome:
    """Share of weight elements *stored* as integers of <= the claimed bits (fake Q/DQ counts as float);
    with ``half_precision``, fp16 / bf16 weights count as well."""
    role = params.model
    summary, evidence = ctx.summaries[role], ctx.observations.models[role].evidence
    claim = ctx.submission.claims.get(params.claim)
    bits_claim = None if str(claim).strip().lower() in HALF_CLAIMS else claimed_bits(claim)
    max_bits = min(bits_claim or 8, params.max_bits)
    half = sum(w.numel for w in evidence.weights if is_half(w)) if params.half_precision else 0
    fraction = (summary.quantized_elements + half) / summary.weight_elements if summary.weight_elements else 0.0
    stored = "integers of <= 8 bits or 16-bit floats" if params.half_precision else "integers of <= 8 bits"
    floats = [
        f"{w.name} ({w.stored_dtype}, {w.numel:,} values)"
        for w in largest_float_weights(evidence, 6)
        if not (params.half_precision and is_half(w))
    ][:3]
    facts = {
        "quantized_fraction": round(fraction, 4),
        "half_precision_elements": half,
        "quantized_elements": summary.quantized_elements,
        "weight_elements": summary.weight_elements,
        "stored_bits": summary.min_quantized_bits,
        "claimed_bits": bits_claim,
        "largest_float_weights": floats,
        "notes": evidence.notes,
    }
    score = linear(fraction, params.full, params.zero)
    message = f"{fraction:.1%} of weight values are stored as {stored} (needs {params.full:.0%} for full marks)."
    if summary.min_quantized_bits and summary.min_quantized_bits > max_bits:
        score = 0.0
        message = f"You claimed {max_bits}-bit weights, but the file stores {summary.min_quantized_bits}-bit integers."
    if score < 1 and floats:
        message += f" Still float: {', '.join(floats)}."
    if score < 1 and any("fake quantization" in n for n in evidence.notes):
        message += " Weights wrapped in QuantizeLinear/DequantizeLinear are still stored as float (fake quantization)."
    return Outcome(score, message + _half_claim_note(claim, params), facts)


class PrunedParams(Params):
    model: str = "candidate"
    reference: str = "baseline"
    claim: str = Field("sparsity", description="the claim key stating the sparsity, e.g. 0.5")
    min: float = Field(0.5, ge=0, le=1, description="sparsity for full marks (or the claim, if higher)")
    zero: float = Field(0.25, ge=0, le=1)
    claim_tolerance: float = Field(0.02, ge=0, le=1)


@register("pruned", PrunedParams)
def pruned(params: PrunedParams, ctx: CheckContext) -> Outcome:
    """Exact zeros (or removed channels) against the baseline, measured, then held against the claim."""
    role = params.model
    figure = ctx.figures.get(f"{pair_key(params.reference, role)}.effective_sparsity")
    sparsity = figure.value if figure and figure.value is not None else ctx.summaries[role].sparsity
    claim = ctx.submission.claims.get(params.claim)
    claimed = float(claim) if isinstance(claim, (int, float)) and not isinstance(claim, bool) else None
    tolerance = params.claim_tolerance
    required = max(params.min, (claimed - tolerance) if claimed is not None else params.min)
    score = linear(sparsity, required, params.zero)
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
    if figure and figure.note:
        message += f" {figure.note[0].upper()}{figure.note[1:]}."
    if claimed is not None and sparsity < claimed - tolerance:
        message += f" You claimed {claimed:.0%}, but the file shows {sparsity:.1%}."
    if summary.near_zero_fraction > 0.01:
        message += (
            f" {summary.near_zero_fraction:.1%} of the weights are tiny but not exactly zero: pruning must "
            "store exact zeros (e.g. torch.nn.utils.prune.remove after pruning, or multiply by the mask)."
        )
    return Outcome(score, message, facts)
