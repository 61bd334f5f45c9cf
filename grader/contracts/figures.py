"""Figure names, and the evidence summary checks read: the contract between the figures the
pipeline derives (``grader.grading.figures``) and everything that reads them.

Checks address figures by these names in ``assignment.yaml``, ``result.json`` stores them, and
reports and the gradebook read them, so the names are a contract: add, never rename.

- ``<role>.<name>``: one model's figure (``candidate.size_mb``, ``service.best_throughput``);
- ``<candidate>_vs_<reference>.<name>``: a comparison (``candidate_vs_baseline.speedup_b64``);
- ``leaderboard.score``: the final project's score formula.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MB = 1024 * 1024
SCORE_FIGURE = "leaderboard.score"

# figures measured on the assignment's device: times, their ratios, and memory on the GPU
DEVICE_FIGURE = re.compile(r"\.(speedup|latency_ms|throughput)_b\d+$|\.(gpu_peak_mb|transfer_ms_b\d+)$")


def is_device_figure(name: str) -> bool:
    """Does this figure depend on the device the models ran on (and so come only from the GPU runner
    where an assignment measures on CUDA)? The score formula counts, as it is made of latencies."""
    return name == SCORE_FIGURE or bool(DEVICE_FIGURE.search(name))


def named_metrics(params: Any) -> Iterator[str]:
    """Every figure name a check's ``params`` refer to (a ``metric`` key at any depth)."""
    if isinstance(params, dict):
        for key, value in params.items():
            if key == "metric" and isinstance(value, str):
                yield value
            else:
                yield from named_metrics(value)
    elif isinstance(params, list):
        for item in params:
            yield from named_metrics(item)


def role_key(role: str, name: str) -> str:
    return f"{role}.{name}"


def pair_key(reference: str, candidate: str) -> str:
    return f"{candidate}_vs_{reference}"


@dataclass(frozen=True)
class ModelFiles:
    """The files one model is made of (an ONNX file and its external data), as the host measured
    them: a model's size is all of its files."""

    files: dict[str, int]  # relpath -> bytes
    size_bytes: int
    gzip_bytes: int


@dataclass(frozen=True)
class AnswerKeys:
    """The labels the host scores predictions with: the team's own (from its inputs.npz) and the
    course's held-out ones (which never enter the sandbox)."""

    team: list[int] | None = None
    heldout: list[int] | None = None


@dataclass(frozen=True)
class EvidenceSummary:
    """One model's weight evidence in totals: what quantization and sparsity figures are made of."""

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
