"""Measurements that hold up on noisy shared machines.

Baseline and candidate are timed in the same process, interleaved (A B A B ...), on the same
inputs and threads (drawn afresh each round by ``grader.worker.timing``), after warm-up; the
reported figure is the ratio with a bootstrap 95% interval, because absolute times drift between
processes far more than interleaved ratios do.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from grader.contracts.observations import Estimate, OutputParity

BOOTSTRAP_SAMPLES = 2000


@dataclass
class PairedTimes:
    reference_s: np.ndarray
    candidate_s: np.ndarray

    @property
    def rounds(self) -> int:
        return int(self.reference_s.size)


def time_interleaved(
    reference: Callable[[], object],
    candidate: Callable[[], object],
    *,
    budget_s: float,
    warmup: int = 3,
    min_rounds: int = 7,
    max_rounds: int = 400,
    prepare: Callable[[int], None] | None = None,
) -> PairedTimes:
    """Alternate the two calls until the budget is spent (but at least ``min_rounds``).

    The order flips every round (A B, B A, ...) so neither model always runs on a cache the
    other just warmed. ``prepare(round)``, if given, runs before each round outside the clock
    (it draws the round's inputs).
    """
    prepare = prepare or (lambda _: None)
    for number in range(warmup):
        prepare(number)
        reference()
        candidate()
    ref, cand = [], []
    deadline = time.perf_counter() + budget_s
    while len(ref) < max_rounds and (len(ref) < min_rounds or time.perf_counter() < deadline):
        prepare(warmup + len(ref))
        first, second = (reference, candidate) if len(ref) % 2 == 0 else (candidate, reference)
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        a, b = (t1 - t0, t2 - t1) if first is reference else (t2 - t1, t1 - t0)
        ref.append(a)
        cand.append(b)
    return PairedTimes(np.array(ref), np.array(cand))


def ratio_estimate(times: PairedTimes, seed: int = 0) -> Estimate:
    """Speedup = reference time / candidate time: median of per-round ratios, bootstrap 95% CI."""
    ratios = times.reference_s / np.maximum(times.candidate_s, 1e-12)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, ratios.size, size=(BOOTSTRAP_SAMPLES, ratios.size))
    medians = np.median(ratios[picks], axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return Estimate(value=float(np.median(ratios)), low=float(low), high=float(high), unit="x")


def rss_mb() -> float:
    """Current resident set size (tracemalloc cannot see memory that torch or onnxruntime allocate)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark (VmHWM) so the next peak belongs to the next model."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def top1_agreement(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    if reference.ndim < 2 or reference.shape != candidate.shape:
        return None
    return float(np.mean(reference.argmax(-1) == candidate.argmax(-1)))


def snr_db(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Signal-to-noise of the candidate's outputs against the reference's, in decibels."""
    if reference.shape != candidate.shape:
        return None
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - candidate.astype(np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0:
        return 200.0
    if signal == 0:
        return None
    return float(10 * np.log10(signal / noise))


def max_abs_error(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    if reference.shape != candidate.shape:
        return None
    return float(np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64)))) if reference.size else 0.0


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float | None:
    """Top-1 accuracy; ``None`` unless there is exactly one integer label per row of logits.

    Labels saved as a column (``[N, 1]``) are flattened: compared as they are, ``[N]`` against
    ``[N, 1]`` would broadcast to an ``[N, N]`` table and give a meaningless figure.
    """
    if logits.ndim != 2 or labels.size != logits.shape[0] or labels.shape[:1] != logits.shape[:1]:
        return None
    return float(np.mean(logits.argmax(-1) == labels.reshape(-1)))


def time_single(
    call: Callable[[], object],
    *,
    budget_s: float,
    warmup: int = 3,
    min_rounds: int = 7,
    max_rounds: int = 400,
    prepare: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Seconds per call of one model alone, after warm-up, until the budget is spent.

    For figures that have no partner to be interleaved with (a team's hw1 baseline). Absolute
    times drift between machines and processes, so they are reported with an interval and
    compared across teams only through a reference model timed in the same run.
    """
    prepare = prepare or (lambda _: None)
    for number in range(warmup):
        prepare(number)
        call()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < max_rounds and (len(times) < min_rounds or time.perf_counter() < deadline):
        prepare(warmup + len(times))
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return np.array(times)


def median_estimate(samples: np.ndarray, *, scale: float = 1.0, unit: str = "", seed: int = 0) -> Estimate:
    """Median of ``samples`` times ``scale``, with a bootstrap 95% interval of the median."""
    values = np.asarray(samples, dtype=np.float64) * scale
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(BOOTSTRAP_SAMPLES, values.size))
    low, high = np.percentile(np.median(values[picks], axis=1), [2.5, 97.5])
    return Estimate(value=float(np.median(values)), low=float(low), high=float(high), unit=unit)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def kl_divergence(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Mean KL(softmax(reference) || softmax(candidate)) over rows, in nats.

    How much of the reference's (the teacher's) belief the candidate loses: 0 when the output
    distributions match exactly. ``None`` for outputs that are not ``[N, classes]`` logits.
    """
    if reference.ndim != 2 or reference.shape != candidate.shape or not reference.size:
        return None
    log_p, log_q = log_softmax(reference), log_softmax(candidate)
    value = float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)))
    return value if np.isfinite(value) else None


RELATIVE_FLOOR = 1e-6  # relative errors are taken against max(|ref|, 1e-6 * max|ref|)


def output_parity(name: str, reference: np.ndarray, candidate: np.ndarray, atol: float, rtol: float) -> OutputParity:
    """Per-output numeric agreement: max abs and relative error, and how far from ``allclose``.

    ``tolerance_ratio`` is ``max(|cand - ref| / (atol + rtol * |ref|))``, so it is <= 1 exactly
    when ``np.allclose(cand, ref, rtol, atol)`` holds, and says by how much it misses otherwise.
    Non-finite values (NaN, inf) anywhere in the difference are counted, never averaged away.
    """
    shape = [int(d) for d in candidate.shape]
    if reference.shape != candidate.shape:
        return OutputParity(
            name=name[:256],
            shape=shape,
            max_abs_error=None,
            max_rel_error=None,
            tolerance_ratio=None,
            note=f"shape {list(candidate.shape)} differs from the reference's {list(reference.shape)}",
        )
    ref = reference.astype(np.float64)
    diff = np.abs(candidate.astype(np.float64) - ref)
    finite = np.isfinite(diff)
    nonfinite = int(diff.size - np.count_nonzero(finite))
    if nonfinite or not diff.size:
        note = f"{nonfinite} non-finite value(s) (NaN or inf)" if nonfinite else "empty output"
        return OutputParity(
            name=name[:256],
            shape=shape,
            max_abs_error=None,
            max_rel_error=None,
            tolerance_ratio=None,
            nonfinite=nonfinite,
            note=note,
        )
    magnitude = np.abs(ref)
    floor = max(float(magnitude.max()) * RELATIVE_FLOOR, np.finfo(np.float64).tiny)
    return OutputParity(
        name=name[:256],
        shape=shape,
        max_abs_error=float(diff.max()),
        max_rel_error=float((diff / np.maximum(magnitude, floor)).max()),
        tolerance_ratio=float((diff / (atol + rtol * magnitude)).max()) if atol > 0 or rtol > 0 else None,
    )
