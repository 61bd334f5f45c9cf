"""Measurements that hold up on noisy shared machines.

Baseline and candidate are timed in the same process, interleaved (A B A B ...), on the same
inputs and threads, after warm-up; the reported figure is the ratio with a bootstrap 95%
interval, because absolute times drift between processes far more than interleaved ratios do.
"""

from __future__ import annotations

import gzip
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from grader.observations import Estimate

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
) -> PairedTimes:
    """Alternate the two calls until the budget is spent (but at least ``min_rounds``).

    The order flips every round (A B, B A, ...) so neither model always runs on a cache the
    other just warmed.
    """
    for _ in range(warmup):
        reference()
        candidate()
    ref, cand = [], []
    deadline = time.perf_counter() + budget_s
    while len(ref) < max_rounds and (len(ref) < min_rounds or time.perf_counter() < deadline):
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


def gzip_size(path: Path) -> int:
    """Size after gzip -6: a stand-in for what entropy coding of the stored weights would give.

    Streamed into a byte counter, so a large model is never held in memory twice.
    """
    sink = _ByteCounter()
    with open(path, "rb") as handle, gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6) as out:  # type: ignore[arg-type]
        for block in iter(lambda: handle.read(1 << 20), b""):
            out.write(block)
    return sink.count


class _ByteCounter:
    """A write-only sink that counts bytes."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        pass


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
