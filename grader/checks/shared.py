"""What rules have in common: scoring a figure between two thresholds, the interval end that gives
the student the benefit of the doubt, number formatting, and short views of a model's evidence
for messages. ``grader.checks.api`` re-exports these for assignments' own checkers.
"""

from __future__ import annotations

from grader.checks.engine import CheckContext
from grader.contracts.observations import Estimate, ModelEvidence, TensorEvidence


def fmt(value: float | None, unit: str = "") -> str:
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


def figure_value(ctx: CheckContext, metric: str) -> float | None:
    figure = ctx.figures.get(metric)
    return None if figure is None else figure.value


def layer_sparsity(evidence: ModelEvidence) -> list[dict[str, object]]:
    """Per prunable layer: name, op, elements and its own sparsity (for the report's details)."""
    return [
        {
            "name": w.name,
            "layer": w.layer,
            "dtype": w.stored_dtype,
            "numel": w.numel,
            "sparsity": round(w.zeros / w.numel, 4) if w.numel else 0.0,
            "distinct": w.distinct,
        }
        for w in evidence.weights
        if w.prunable
    ]


def largest_float_weights(evidence: ModelEvidence, limit: int = 5) -> list[TensorEvidence]:
    """The float weights that keep a model from counting as quantized, biggest first."""
    floats = [w for w in evidence.weights if not w.quantized]
    return sorted(floats, key=lambda w: w.numel, reverse=True)[:limit]


def weight_shapes(evidence: ModelEvidence) -> list[tuple[int, ...]]:
    """The weight tensors' shapes, sorted: two models with the same list share an architecture."""
    return sorted(tuple(w.shape) for w in evidence.weights)
