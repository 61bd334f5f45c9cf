"""Build-time gates: each reference solution must clear its own assignment's full-marks thresholds
with headroom, measured here, before the build may finish.

The grader later measures the same files on the same inputs on the same machine with the same
runtime, so a figure the build measured with headroom cannot land on the other side of a
threshold when graded, whatever CPU built it; only the figures themselves differ from one CPU to
the next (training is not bit-identical across CPUs). Where a recipe falls short on some machine,
the build trains a little longer (``reference.build``) rather than ship a solution whose verdict
would depend on luck. The thresholds are read from ``assignments/*/assignment.yaml``, so a change
there is a change here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

ASSIGNMENTS = Path(__file__).resolve().parent.parent / "assignments"
KL_HEADROOM = 0.8  # a KL divergence must stay under 80% of its threshold


@dataclass(frozen=True)
class Threshold:
    metric: str  # the figure's name after the role prefix, e.g. top1_agreement
    full: float
    higher_is_better: bool


def full_marks(assignment: str, check: str) -> list[Threshold]:
    """The criteria a check gives a classifier full marks at, from the shipped assignment.yaml.

    Every reference model is a classifier, so a criterion that only applies to models whose
    output is a vector of values (``applies_to: values``, e.g. a signal-to-noise ratio) is not
    one the build can or should gate on.
    """
    config = yaml.safe_load((ASSIGNMENTS / assignment / "assignment.yaml").read_text())
    spec = next(c for c in config["checks"] if c["id"] == check)
    criteria = spec["params"].get("criteria") or [spec["params"]]
    return [
        Threshold(c["metric"].split(".", 1)[1], float(c["full"]), float(c["full"]) >= float(c["zero"]))
        for c in criteria
        if c.get("applies_to", "any") in ("any", "classes")
    ]


def logits(path: Path, inputs: np.ndarray) -> np.ndarray:
    from reference.compress import INPUT_NAME, OUTPUT_NAME, ort_session

    return ort_session(path, threads=1).run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]


def fidelity(reference: Path, candidate: Path, inputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The grader's fidelity figures of ``candidate`` against ``reference``, as the build sees them."""
    ref, cand = logits(reference, inputs), logits(candidate, inputs)
    log_p, log_q = _log_softmax(ref), _log_softmax(cand)
    return {
        "top1_agreement": float(np.mean(ref.argmax(1) == cand.argmax(1))),
        "accuracy_drop_pts": float(np.mean(ref.argmax(1) == labels) - np.mean(cand.argmax(1) == labels)) * 100,
        "kl_divergence": float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1))),
    }


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z.astype(np.float64) - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def shortfalls(figures: dict[str, float], thresholds: list[Threshold], samples: int) -> list[str]:
    """Each threshold the figures miss, or clear by less than one sample's worth (a KL: 20%)."""
    found = []
    for threshold in thresholds:
        value = figures[threshold.metric]
        if threshold.metric == "kl_divergence":
            ok = value <= threshold.full * KL_HEADROOM
        elif threshold.metric.endswith("_pts"):
            ok = value <= threshold.full - 100 / samples if not threshold.higher_is_better else value >= threshold.full
        else:
            step = 1 / samples
            ok = value >= threshold.full + step if threshold.higher_is_better else value <= threshold.full - step
        if not ok:
            found.append(f"{threshold.metric} {value:.4g} (full marks at {threshold.full:g})")
    return found
