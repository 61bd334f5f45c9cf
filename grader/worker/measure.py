"""Measurements that hold up on noisy shared machines.

Baseline and candidate are timed in the same process, interleaved (A B, B A, ...), on the same
inputs and threads (drawn afresh each round by ``grader.worker.timing``), after warm-up; the
reported figure is the ratio with a 95% interval, because absolute times drift between
processes far more than interleaved ratios do.

The ratio is taken over *pair-rounds*: each A B round and the B A round after it are one unit
(the geometric mean of their two ratios), which cancels any edge the first call of a round has
over the second. The figure is the geometric mean of the units, once units more than
``OUTLIER_MADS`` robust deviations off their median (a round the machine preempted) are dropped;
its 95% interval is a t-interval from ``BATCHES`` batch means: consecutive units averaged in
batches, so the drift of a shared machine (neighbouring rounds are alike) stays inside each
batch instead of passing for independent evidence. On A/A gradings (the same model twice) this
interval covers 1.0 as often as it says (``benchmarks/timing.py``), where a bootstrap of the
median fell short. Timing is sequential: after ``min_rounds`` it stops as soon as ``settled``
says the interval can no longer change the verdict, or at the cap.
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from grader.contracts.observations import Estimate, OutputParity

BOOTSTRAP_SAMPLES = 2000
BATCHES = 8  # batch means of the speedup's interval
OUTLIER_MADS = 6.0  # pair-rounds this far off the median (in robust deviations) are a preempted round
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365}  # Student's t, two-sided 95%
SETTLE_EVERY = 4  # rounds between two looks at the interval (even: whole pair-rounds)
WARM_WINDOW = 8  # GPU warm-up: the last rounds' median against the ones before
WARM_STEADY = 0.03  # ... within 3%: clocks and caches have settled

Settled = Callable[["PairedTimes"], bool]


@dataclass
class PairedTimes:
    reference_s: np.ndarray
    candidate_s: np.ndarray
    stopped: str = "budget"  # settled | budget | max_rounds

    @property
    def rounds(self) -> int:
        return int(self.reference_s.size)


def time_interleaved(
    reference: Callable[[], object],
    candidate: Callable[[], object],
    *,
    budget_s: float,
    warmup: int = 3,
    min_rounds: int = 8,
    max_rounds: int = 400,
    prepare: Callable[[int], None] | None = None,
    collect: Callable[[int], None] | None = None,
    settled: Settled | None = None,
    warmup_s: float = 0.0,
    max_warmup_s: float = 0.0,
) -> PairedTimes:
    """Alternate the two calls until ``settled`` says the figure is decided (checked every
    ``SETTLE_EVERY`` rounds once ``min_rounds`` are in), the budget is spent or ``max_rounds``.

    The order flips every round (A B, B A, ...) so neither model always runs on a cache the
    other just warmed. ``prepare(round)``, if given, runs before each round outside the clock
    (it draws the round's inputs, and on a GPU copies them there); ``collect(round)`` after it,
    outside the clock too (it fetches and keeps the answers). ``warmup_s`` (a GPU) extends the
    warm-up until the round times are steady, at most ``max_warmup_s``.
    """
    prepare = prepare or (lambda _: None)
    collect = collect or (lambda _: None)

    def warm_round(number: int) -> float:
        prepare(number)
        started = time.perf_counter()
        reference()
        candidate()
        elapsed = time.perf_counter() - started
        collect(number)
        return elapsed

    warmup = warm_up(warm_round, warmup, warmup_s, max_warmup_s)
    ref: list[float] = []
    cand: list[float] = []
    deadline = time.perf_counter() + budget_s
    while True:
        done = len(ref)
        if done >= max_rounds:
            return PairedTimes(np.array(ref), np.array(cand), "max_rounds")
        if done >= min_rounds:
            if time.perf_counter() >= deadline:
                return PairedTimes(np.array(ref), np.array(cand), "budget")
            if settled is not None and done % SETTLE_EVERY == 0 and settled(PairedTimes(np.array(ref), np.array(cand))):
                return PairedTimes(np.array(ref), np.array(cand), "settled")
        prepare(warmup + done)
        first, second = (reference, candidate) if done % 2 == 0 else (candidate, reference)
        t0 = time.perf_counter()
        first()
        t1 = time.perf_counter()
        second()
        t2 = time.perf_counter()
        a, b = (t1 - t0, t2 - t1) if first is reference else (t2 - t1, t1 - t0)
        collect(warmup + done)
        ref.append(a)
        cand.append(b)


def warm_up(round_s: Callable[[int], float], rounds: int, least_s: float, most_s: float) -> int:
    """Run ``rounds`` warm-up rounds, then, for at least ``least_s`` seconds, more until the last
    ``WARM_WINDOW`` rounds' median is within ``WARM_STEADY`` of the window before (a GPU's clocks
    ramp up over the first second or so), at most ``most_s``. Returns the rounds run."""
    times = [round_s(number) for number in range(rounds)]
    if least_s <= 0:
        return rounds
    started = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - started
        if elapsed >= max(most_s, least_s):
            return len(times)
        if elapsed >= least_s and len(times) >= 2 * WARM_WINDOW:
            last = float(np.median(times[-WARM_WINDOW:]))
            before = float(np.median(times[-2 * WARM_WINDOW : -WARM_WINDOW]))
            if abs(last - before) <= WARM_STEADY * before:
                return len(times)
        times.append(round_s(len(times)))


def pair_round_ratios(times: PairedTimes) -> np.ndarray:
    """One ratio per A B + B A pair of rounds (their geometric mean); a last odd round alone."""
    ratios = times.reference_s / np.maximum(times.candidate_s, 1e-12)
    whole = ratios[: ratios.size // 2 * 2].reshape(-1, 2)
    units = np.sqrt(whole[:, 0] * whole[:, 1])
    return np.concatenate([units, ratios[whole.size :]]) if ratios.size % 2 else units


def block_bootstrap_median(units: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the median, resampling moving blocks of about n^(1/3) units."""
    n = units.size
    if n < 2:
        value = float(units[0]) if n else math.nan
        return value, value
    block = max(1, round(n ** (1 / 3)))
    starts = np.random.default_rng(seed).integers(0, n - block + 1, size=(BOOTSTRAP_SAMPLES, -(-n // block)))
    picks = (starts[:, :, None] + np.arange(block)).reshape(BOOTSTRAP_SAMPLES, -1)[:, :n]
    low, high = np.percentile(np.median(units[picks], axis=1), [2.5, 97.5])
    return float(low), float(high)


def without_preempted(logs: np.ndarray) -> np.ndarray:
    """The log units, in order, less those more than ``OUTLIER_MADS`` robust deviations off their
    median: a round the machine preempted would otherwise pull a mean (never the most it can drop
    is half of them, so a model that is slow half the time is timed as slow)."""
    centre = float(np.median(logs))
    spread = 1.4826 * float(np.median(np.abs(logs - centre)))
    return logs if spread == 0 else logs[np.abs(logs - centre) <= OUTLIER_MADS * spread]


def batch_means_interval(logs: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high) of ``logs`` with a 95% t-interval from ``BATCHES`` means of consecutive
    batches (fewer batches, of one value each, while there are fewer values than that)."""
    n = logs.size
    if n < 2:
        value = float(logs[0]) if n else math.nan
        return value, value, value
    batches = min(BATCHES, n)
    means = np.array([part.mean() for part in np.array_split(logs, batches)])
    centre = float(logs.mean())
    half = T_975[batches - 1] * float(means.std(ddof=1)) / math.sqrt(batches)
    return centre, centre - half, centre + half


def ratio_estimate(times: PairedTimes, session_noise: float = 0.0) -> Estimate:
    """Speedup = reference time / candidate time: the geometric mean over pair-rounds (preempted
    rounds dropped), with a batch-means 95% t-interval; ``session_noise`` (a relative standard
    deviation between sessions) is added to its half-width in quadrature."""
    logs = without_preempted(np.log(pair_round_ratios(times)))
    centre, low, high = batch_means_interval(logs)
    within = Estimate(value=math.exp(centre), low=math.exp(low), high=math.exp(high), unit="x")
    return with_session_noise(within, session_noise)


def with_session_noise(within: Estimate, session_noise: float) -> Estimate:
    """A within-run ratio estimate widened by ``session_noise``, in quadrature on the log scale."""
    if not session_noise or within.value is None or within.high is None:
        return within
    centre = math.log(within.value)
    half = math.hypot(math.log(within.high) - centre, 1.96 * math.log1p(session_noise))
    return within.model_copy(update={"low": math.exp(centre - half), "high": math.exp(centre + half)})


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
    """Signal-to-noise of the candidate's outputs against the reference's, in decibels.

    The signal is how much the reference's outputs vary from sample to sample (each output
    element centred on its mean over the samples): an offset added to both models' outputs is
    not signal, or any output plus a large constant would read as faithful.
    """
    if reference.shape != candidate.shape:
        return None
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - candidate.astype(np.float64)) ** 2))
    centred = ref - ref.mean(axis=0, keepdims=True) if ref.ndim and ref.shape[0] > 1 else ref
    signal = float(np.sum(centred**2))
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
    min_rounds: int = 8,
    max_rounds: int = 400,
    prepare: Callable[[int], None] | None = None,
    collect: Callable[[int], None] | None = None,
    settled: Callable[[np.ndarray], bool] | None = None,
    warmup_s: float = 0.0,
    max_warmup_s: float = 0.0,
) -> tuple[np.ndarray, str]:
    """Seconds per call of one model alone, after warm-up, until ``settled`` (checked every
    ``SETTLE_EVERY`` calls after ``min_rounds``), the budget or ``max_rounds``; and why it stopped.

    For figures that have no partner to be interleaved with (a team's hw1 baseline). Absolute
    times drift between machines and processes, so they are reported with an interval and
    compared across teams only through a reference model timed in the same run.
    """
    prepare = prepare or (lambda _: None)
    collect = collect or (lambda _: None)

    def warm_round(number: int) -> float:
        prepare(number)
        started = time.perf_counter()
        call()
        elapsed = time.perf_counter() - started
        collect(number)
        return elapsed

    warmup = warm_up(warm_round, warmup, warmup_s, max_warmup_s)
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while True:
        done = len(times)
        if done >= max_rounds:
            return np.array(times), "max_rounds"
        if done >= min_rounds:
            if time.perf_counter() >= deadline:
                return np.array(times), "budget"
            if settled is not None and done % SETTLE_EVERY == 0 and settled(np.array(times)):
                return np.array(times), "settled"
        prepare(warmup + done)
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        collect(warmup + done)


def median_estimate(samples: np.ndarray, *, scale: float = 1.0, unit: str = "", seed: int = 0) -> Estimate:
    """Median of ``samples`` times ``scale``, with a moving-block bootstrap 95% interval of the median."""
    values = np.asarray(samples, dtype=np.float64) * scale
    low, high = block_bootstrap_median(values, seed)
    return Estimate(value=float(np.median(values)), low=low, high=high, unit=unit)


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
