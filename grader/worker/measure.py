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
says the interval can no longer change the verdict, or at the cap. A session's figures take turns
on the machine (``run_in_turns``), so that none is timed in one short stretch of it.
"""

from __future__ import annotations

import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.contracts.job import session_half
from grader.contracts.observations import Estimate, OutputParity

BOOTSTRAP_SAMPLES = 2000
BATCHES = 8  # batch means of the speedup's interval
OUTLIER_MADS = 6.0  # pair-rounds this far off the median (in robust deviations) are a preempted round
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365}  # Student's t, two-sided 95%
SETTLE_EVERY = 4  # rounds between two looks at the interval (even: whole pair-rounds)
WARM_WINDOW = 8  # GPU warm-up: the last rounds' median against the ones before
WARM_STEADY = 0.03  # ... within 3%: clocks and caches have settled


@dataclass
class PairedTimes:
    reference_s: np.ndarray
    candidate_s: np.ndarray
    stopped: str = "budget"  # settled | open | budget | max_rounds

    @property
    def rounds(self) -> int:
        return int(self.reference_s.size)


class Clock:
    """One figure's timed rounds, run a turn at a time, so that several figures can take turns on
    the machine (``run_in_turns``) instead of each being timed in one stretch.

    ``calls`` are one round's models: a reference and a candidate, whose order flips every round
    (A B, B A, ...) so neither always runs on a cache the other just warmed, or one model alone.
    ``prepare(number)``, if given, runs before each round outside the clock (it draws the round's
    inputs, and on a GPU copies them there); ``collect(number)`` after it, outside the clock too
    (it fetches and keeps the answers). After ``min_rounds`` the figure stops as soon as
    ``settled`` says so (looked at every ``SETTLE_EVERY`` rounds), once its own rounds have taken
    ``budget_s``, or at ``max_rounds``; ``stopped`` then says which. ``settled`` answers True (or
    "settled") to stop with the verdict decided, "open" to stop with it open that no more rounds
    could close, and False or "" to go on. ``warmup_s`` (a GPU) extends
    the warm-up until the round times are steady, at most ``max_warmup_s``.
    """

    def __init__(
        self,
        calls: tuple[Callable[[], object], ...],
        *,
        budget_s: float,
        warmup: int = 3,
        min_rounds: int = 8,
        max_rounds: int = 400,
        prepare: Callable[[int], None] | None = None,
        collect: Callable[[int], None] | None = None,
        settled: Callable[..., bool | str] | None = None,
        warmup_s: float = 0.0,
        max_warmup_s: float = 0.0,
    ) -> None:
        self.calls = calls
        self.budget_s, self.warmup, self.min_rounds, self.max_rounds = budget_s, warmup, min_rounds, max_rounds
        self.prepare = prepare or (lambda _: None)
        self.collect = collect or (lambda _: None)
        self.settled = settled
        self.warmup_s, self.max_warmup_s = warmup_s, max_warmup_s
        self.seconds: list[list[float]] = [[] for _ in calls]
        self.stopped: str | None = None
        self.spent_s = 0.0  # this figure's own timed rounds (with their inputs drawn and answers kept)
        self.turns = 0
        self.numbered = 0  # rounds run so far, warm-up included (what prepare and collect are told)
        self.last_round_s = 0.0
        self.held_back = False  # some turn was not allowed to settle (see run_in_turns)

    @property
    def rounds(self) -> int:
        return len(self.seconds[0])

    @property
    def round_s(self) -> float:
        """What one of its rounds costs, inputs drawn and answers kept included."""
        return self.spent_s / self.rounds if self.rounds else self.last_round_s

    def result(self) -> PairedTimes | np.ndarray:
        if len(self.calls) == 2:
            return PairedTimes(np.array(self.seconds[0]), np.array(self.seconds[1]), self.stopped or "budget")
        return np.array(self.seconds[0])

    def warm(self) -> None:
        """The untimed warm-up rounds, before the figure's first turn."""
        self.warmup = warm_up(lambda _: self._warm_round(), self.warmup, self.warmup_s, self.max_warmup_s)

    def _warm_round(self, flipped: bool = False) -> float:
        """One untimed round (in reverse order if ``flipped``); returns how long its calls took."""
        started = time.perf_counter()
        self.prepare(self.numbered)
        t0 = time.perf_counter()
        for call in reversed(self.calls) if flipped else self.calls:
            call()
        elapsed = time.perf_counter() - t0
        self.collect(self.numbered)
        self.numbered += 1
        self.last_round_s = time.perf_counter() - started
        return elapsed

    def _stop(self, spent_s: float, may_settle: bool = True) -> str | None:
        done = self.rounds
        if done >= self.max_rounds:  # a cheap figure kept from settling while others ran may be by now
            return (self._verdict() if self.held_back else "") or "max_rounds"
        if done >= self.min_rounds:
            if spent_s >= self.budget_s:
                return "budget"
            if may_settle and done % SETTLE_EVERY == 0:
                return self._verdict() or None
        return None

    def _verdict(self) -> str:
        """What ``settled`` says of the rounds so far: "settled", "open", or "" (go on)."""
        verdict = self.settled(self.result()) if self.settled is not None else ""
        verdict = verdict if isinstance(verdict, str) else "settled" if verdict else ""
        assert verdict in ("", "settled", "open"), f"settled answered {verdict!r}"
        return verdict

    def turn(self, rounds: int | None = None, *, warm_first: bool = False, may_settle: bool = True) -> None:
        """Up to ``rounds`` timed rounds (all it takes to stop, if None); ``warm_first``: one untimed
        round before them, for a turn that follows other figures' rounds on a cold cache;
        ``may_settle``: whether this turn looks at ``settled`` (the caps always apply). Turns
        alternate which model goes first, so a turn's first call (the coldest) is neither's edge."""
        started = time.perf_counter()
        if warm_first and self.stopped is None:
            # in the order of the turn's first round: whichever model goes first follows the other
            # one's call, in every turn, so the warm-up gives neither an edge
            self._warm_round(flipped=(self.rounds + self.turns) % 2 == 1)
        if not may_settle:
            self.held_back = True
        run = 0
        while rounds is None or run < rounds:
            self.stopped = self._stop(self.spent_s + time.perf_counter() - started, may_settle)
            if self.stopped is not None:
                break
            self._timed_round((self.rounds + self.turns) % 2 == 1)
            run += 1
        self.turns += 1
        self.spent_s += time.perf_counter() - started

    def _timed_round(self, flipped: bool) -> None:
        self.prepare(self.numbered)
        order = range(len(self.calls) - 1, -1, -1) if flipped else range(len(self.calls))
        marks = [time.perf_counter()]
        for index in order:
            self.calls[index]()
            marks.append(time.perf_counter())
        for position, index in enumerate(order):
            self.seconds[index].append(marks[position + 1] - marks[position])
        self.collect(self.numbered)
        self.numbered += 1


TURN_SHARE = 0.1  # a faster figure's turn takes about this share of the slowest figure's pair-round
MAX_TURN_ROUNDS = 16  # a far cheaper figure then reaches max_rounds (400) after 25 turns, not after the first few


def turn_rounds(round_s: float, slowest_s: float) -> int:
    """Rounds in one turn of a figure whose rounds take ``round_s``: an even number (whole A B +
    B A pairs), two for the slowest figure, more for faster ones so that each of their turns takes
    about ``TURN_SHARE`` of the slowest's."""
    if round_s <= 0 or slowest_s <= 0:
        return 2
    return min(MAX_TURN_ROUNDS, 2 * max(1, math.ceil(round(TURN_SHARE * slowest_s / round_s, 6))))


def run_in_turns(clocks: list[Clock]) -> None:
    """Warm every figure up, then give them turns in rotation until each has stopped.

    Figures timed one after another are each timed in one stretch, and a short stretch reads the
    machine's state at that moment: on a 2-core VM, ten stretches of 100 batch-1 rounds of the
    hw2 reference read 2.73x to 3.02x, with 95% intervals that exclude each other. In turns, a
    cheap figure's rounds are spread over the whole timing, so its interval (batch means over
    time) sees that drift and its figure averages it: a figure much cheaper than the slowest gets
    about ``TURN_SHARE`` of the slowest one's time per turn (more than one pair of rounds), and
    does not settle while a slower one still runs: its turns cost little, and stopping after the
    first of them would time it in one short stretch again (a quiet second reads a narrow interval
    around that second's figure). A figure within 10x of the slowest gets one pair per turn, as
    the slowest does, and may settle like it, after ``min_rounds`` pairs spread over as many turns
    (as long a stretch as the slowest's own). The last figure left runs to its end at once. A
    figure's budget counts its own rounds only.
    """
    for clock in clocks:
        clock.warm()
    live = list(clocks)
    while len(live) > 1:
        slowest = max(clock.round_s for clock in live)
        for clock in live:
            rounds = turn_rounds(clock.round_s, slowest)
            clock.turn(rounds, warm_first=rounds > 2, may_settle=rounds == 2)
        live = [clock for clock in live if clock.stopped is None]
    for clock in live:
        clock.turn(warm_first=len(clocks) > 1)


def time_interleaved(reference: Callable[[], object], candidate: Callable[[], object], **options: Any) -> PairedTimes:
    """One pair timed by itself, interleaved (A B, B A, ...) until settled, the budget or
    ``max_rounds``; ``options`` are ``Clock``'s (``budget_s`` is required)."""
    clock = Clock((reference, candidate), **options)
    run_in_turns([clock])
    result = clock.result()
    assert isinstance(result, PairedTimes)
    return result


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


def ratio_estimate(times: PairedTimes, session_noise: float = 0.0, min_half: float = 0.0) -> Estimate:
    """Speedup = reference time / candidate time: the geometric mean over pair-rounds (preempted
    rounds dropped), with a batch-means 95% t-interval, whose half-width on the log scale is at
    least ``min_half`` (a figure that stopped once its interval looked that narrow: the look
    itself is noisy, and a stop on a width that read low must not narrow the verdict's end);
    ``session_noise`` (a relative standard deviation between sessions) is added to its half-width
    in quadrature."""
    logs = without_preempted(np.log(pair_round_ratios(times)))
    centre, low, high = batch_means_interval(logs)
    half = max((high - low) / 2, min_half)
    within = Estimate(value=math.exp(centre), low=math.exp(centre - half), high=math.exp(centre + half), unit="x")
    return with_session_noise(within, session_noise)


def with_session_noise(within: Estimate, session_noise: float) -> Estimate:
    """A within-run ratio estimate widened by ``session_noise``, in quadrature on the log scale."""
    if not session_noise or within.value is None or within.high is None:
        return within
    centre = math.log(within.value)
    half = math.hypot(math.log(within.high) - centre, session_half(session_noise))
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


def time_single(call: Callable[[], object], **options: Any) -> tuple[np.ndarray, str]:
    """Seconds per call of one model alone, after warm-up, until settled, the budget or
    ``max_rounds`` (``options`` are ``Clock``'s, ``budget_s`` required); and why it stopped.

    For figures that have no partner to be interleaved with (a team's hw1 baseline). Absolute
    times drift between machines and processes, so they are reported with an interval and
    compared across teams only through a reference model timed in the same run.
    """
    clock = Clock((call,), **options)
    run_in_turns([clock])
    return np.array(clock.seconds[0]), clock.stopped or "budget"


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
