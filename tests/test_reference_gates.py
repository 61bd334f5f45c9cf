"""The reference build's gates (reference/gates.py) read only criteria it can measure.

The build runs on CI's fresh machine before any test; a criterion added to an assignment.yaml
that the build cannot compute (a regressor's SNR, say) must be skipped by the gates, not crash
the set-up.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference import gates

GATED = [
    ("hw2-quantization-pruning", "fidelity"),
    ("hw3-clustering", "fidelity"),
    ("hw4-distillation", "agreement"),
    ("hw4-distillation", "accuracy"),
]


@pytest.mark.parametrize("assignment, check", GATED)
def test_every_gated_criterion_is_one_the_build_measures(reference_paths, assignment: str, check: str) -> None:
    with np.load(reference_paths["eval_npz"]) as data:
        x, y = data["input"], data["labels"]
    model = reference_paths["model_onnx"]
    figures = gates.fidelity(model, model, x, y)
    thresholds = gates.full_marks(assignment, check)
    assert thresholds, f"{assignment}/{check} has no criterion a classifier is graded by"
    assert {t.metric for t in thresholds} <= set(figures)
    assert gates.shortfalls(figures, thresholds, len(x)) == []  # a model against itself clears every gate
