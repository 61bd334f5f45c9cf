"""Figures that checks and reports use, derived from ``ModelEvidence`` alone.

Kept separate from the readers so every assignment (and the host, which never loads models)
computes sparsity and quantization the same way from the same evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from grader.worker.evidence.tensors import PALETTE_MAX
from grader.contracts.observations import ModelEvidence, TensorEvidence


@dataclass(frozen=True)
class EvidenceSummary:
    weight_elements: int
    quantized_elements: int
    min_quantized_bits: int | None
    prunable_elements: int
    prunable_zeros: int
    prunable_near_zeros: int
    params_total: int

    @property
    def quantized_fraction(self) -> float:
        return self.quantized_elements / self.weight_elements if self.weight_elements else 0.0

    @property
    def sparsity(self) -> float:
        return self.prunable_zeros / self.prunable_elements if self.prunable_elements else 0.0

    @property
    def near_zero_fraction(self) -> float:
        return self.prunable_near_zeros / self.prunable_elements if self.prunable_elements else 0.0

    @property
    def prunable_nonzeros(self) -> int:
        return self.prunable_elements - self.prunable_zeros


def summarize(evidence: ModelEvidence) -> EvidenceSummary:
    weights = evidence.weights
    quantized = [w for w in weights if w.quantized]
    prunable = [w for w in weights if w.prunable]
    return EvidenceSummary(
        weight_elements=sum(w.numel for w in weights),
        quantized_elements=sum(w.numel for w in quantized),
        min_quantized_bits=min((w.bits for w in quantized), default=None),
        prunable_elements=sum(w.numel for w in prunable),
        prunable_zeros=sum(w.zeros for w in prunable),
        prunable_near_zeros=sum(w.near_zeros for w in prunable),
        params_total=evidence.params_total,
    )


def effective_sparsity(candidate: EvidenceSummary, baseline: EvidenceSummary | None) -> float:
    """Share of the baseline's prunable weights that are gone: zeroed, or removed outright.

    Structured pruning (fewer channels) shrinks the tensors instead of zeroing them, so measuring
    against the baseline's element count credits both kinds the same way.
    """
    total = max(baseline.prunable_elements if baseline else 0, candidate.prunable_elements)
    if not total:
        return 0.0
    return 1.0 - candidate.prunable_nonzeros / total


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


CODEBOOK_ENTRY_BITS = 32


def tensor_palettized_bits(weight: TensorEvidence) -> int:
    """Bits to store a tensor as indices into a codebook of its distinct values (log2 k each + the
    codebook), when that is smaller than storing it as it is; otherwise its stored bits."""
    stored = weight.numel * weight.bits
    if not 0 < weight.distinct <= PALETTE_MAX:
        return stored
    index_bits = max(1, math.ceil(math.log2(weight.distinct)))
    return min(stored, weight.numel * index_bits + weight.distinct * CODEBOOK_ENTRY_BITS)


def palettized_bytes(evidence: ModelEvidence) -> float:
    """Size of the model with every weight tensor palettized, and every other parameter at 32 bits.

    A format-independent figure for weight clustering (hw3): what the file would weigh if each
    clustered tensor were stored as log2(k)-bit indices plus a k-entry fp32 codebook.
    """
    weight_elements = sum(w.numel for w in evidence.weights)
    bits = sum(tensor_palettized_bits(w) for w in evidence.weights)
    bits += max(evidence.params_total - weight_elements, 0) * CODEBOOK_ENTRY_BITS
    return bits / 8


def weight_shapes(evidence: ModelEvidence) -> list[tuple[int, ...]]:
    """The weight tensors' shapes, sorted: two models with the same list share an architecture."""
    return sorted(tuple(w.shape) for w in evidence.weights)
