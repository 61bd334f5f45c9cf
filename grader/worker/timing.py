"""Timing that measures what is checked.

Each timed round feeds the models a batch drawn afresh from the evaluation inputs: rows in a new
random order, and float inputs with a little Gaussian noise (a thousandth of each input's spread),
so a cache of earlier answers or a shortcut keyed on a particular batch never hits while the
clock runs. What each model answers while timed is kept and held against its own answers
outside timing on the same rows (``TimedOutputs``): answers that differ, beyond what the noise
and the batch size can explain, mean the clock timed something other than the model that was
checked, and the timing is not believed. A model whose file fixes its batch to another size is
not timed at this one, and the comparison says so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grader.contracts.figures import pair_key
from grader.contracts.job import Job, TimingDecision, TimingSpec, session_half
from grader.contracts.observations import Estimate, SoloTiming, TimedOutputs, TimingComparison
from grader.worker.measure import (
    Clock,
    PairedTimes,
    median_estimate,
    ratio_estimate,
    run_in_turns,
    snr_db,
    with_session_noise,
)
from grader.worker.runtime import LoadedModel, Staged

NOISE = 1e-3  # of each float input's standard deviation
STOPPED_SETTLED = "stopped once settled"  # how a stop note begins, after its rounds (benchmarks/ reads it)
STOPPED_OPEN = "stopped open once this run's part of the 95% interval was within"
MIN_AGREEMENT = 0.9  # timed vs untimed top-1 answers of the same model on the same rows
MIN_SNR_DB = 20.0  # timed vs untimed outputs: far below int8 or batch-size effects (>= 30 dB)
KEEP_ELEMENTS = 4_000_000  # timed outputs kept for the check, per model

Feeds = dict[str, np.ndarray]
FeedsFor = Callable[[LoadedModel, str, dict[str, np.ndarray], np.ndarray], Feeds]


@dataclass
class Draws:
    """The batches of one timing: new rows and new noise every round, the same for both models."""

    arrays: dict[str, np.ndarray]
    batch: int
    seed: int
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    noisy: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.total = next(iter(self.arrays.values())).shape[0]
        self.spread = {
            name: float(np.std(a)) if np.issubdtype(a.dtype, np.floating) and a.size else 0.0
            for name, a in self.arrays.items()
        }

    def next(self) -> None:
        """Draw the next round's rows and noise (outside the clock)."""
        self.index = self.rng.choice(self.total, size=self.batch, replace=self.batch > self.total)
        self.noisy = {}
        for name, array in self.arrays.items():
            rows = array[self.index]
            if self.spread[name] > 0:
                rows = (rows + self.rng.normal(0.0, NOISE * self.spread[name], rows.shape)).astype(array.dtype)
            self.noisy[name] = rows


class Watch:
    """A model's answers in every timed round (up to a bound), with the rows they answer.

    ``prepare`` stages the round's batch (on a GPU: copied to the device), outside the clock;
    the timed ``__call__`` is the model's call alone (on a GPU: on device-resident inputs, until
    the device is done); ``collect`` fetches and keeps the answers afterwards, outside the clock,
    and records how long the copies to and from the device took.
    """

    def __init__(self, role: str, model: LoadedModel, draws: Draws, feeds_for: FeedsFor) -> None:
        self.role, self.model, self.draws, self.feeds_for = role, model, draws, feeds_for
        self.kept: list[tuple[np.ndarray, np.ndarray]] = []
        self.elements = 0
        self.staged: Staged | None = None
        self.transfers_s: list[float] = []

    def prepare(self) -> None:
        rows = np.arange(self.draws.batch)
        self.staged = self.model.stage(self.feeds_for(self.model, self.role, self.draws.noisy, rows))

    def __call__(self) -> None:
        assert self.staged is not None
        self.staged.call()

    def collect(self) -> None:
        assert self.staged is not None
        answer = rows_of(self.staged.fetch())
        if self.staged.h2d_s is not None and self.staged.d2h_s is not None:
            self.transfers_s.append(self.staged.h2d_s + self.staged.d2h_s)
        if self.elements + answer.size <= KEEP_ELEMENTS:
            self.kept.append((self.draws.index.copy(), answer))
            self.elements += answer.size

    def transfer_ms(self) -> float | None:
        return float(np.median(self.transfers_s)) * 1e3 if self.transfers_s else None

    def verdict(self, untimed: np.ndarray | None) -> TimedOutputs:
        return check_timed_outputs(self.role, self.kept, untimed)


def rows_of(outputs: list[np.ndarray]) -> np.ndarray:
    """Every output of a call, one row per sample ([N, features]), so that what is checked while
    timed is all a model answers, not its first output alone; the first output as it is where
    the outputs do not share a batch axis."""
    arrays = [np.asarray(o) for o in outputs]
    if not arrays:
        return np.zeros(0)
    if all(a.ndim >= 1 and a.shape[0] == arrays[0].shape[0] for a in arrays):
        if len(arrays) == 1 and arrays[0].ndim == 2:
            return arrays[0]
        return np.concatenate([a.reshape(a.shape[0], -1).astype(np.float64) for a in arrays], axis=1)
    return arrays[0]


def check_timed_outputs(
    role: str, kept: list[tuple[np.ndarray, np.ndarray]], untimed: np.ndarray | None
) -> TimedOutputs:
    """Timed answers against the untimed ones for the same rows: top-1 agreement for class
    scores, SNR for every output."""
    if untimed is None or not kept:
        return TimedOutputs(role=role, rounds_checked=0, consistent=True, note="no untimed outputs to compare with")
    rows = max(int(index.max()) for index, _ in kept) + 1
    if untimed.ndim == 0 or untimed.shape[0] < rows:
        return TimedOutputs(
            role=role,
            rounds_checked=0,
            consistent=False,
            note=f"'{role}' gives outputs of shape {list(untimed.shape)[:4]} with no answer per sample, so what "
            "it answered while timed cannot be checked against its answers outside timing",
        )
    timed = [out for _, out in kept]
    expected = [untimed[index] for index, _ in kept]
    if any(t.shape != e.shape for t, e in zip(timed, expected)):
        shapes = sorted({str(list(t.shape)) for t in timed})[:3]
        return TimedOutputs(
            role=role,
            rounds_checked=len(kept),
            consistent=False,
            note=f"while timed, '{role}' answered with outputs of shape {', '.join(shapes)}, not "
            f"{list(expected[0].shape)} as outside timing",
        )
    a, b = np.concatenate(expected), np.concatenate(timed)
    agreement = float(np.mean(a.argmax(-1) == b.argmax(-1))) if a.ndim == 2 and a.shape[1] >= 2 else None
    snr = snr_db(a, b)
    bad_agreement = agreement is not None and agreement < MIN_AGREEMENT
    bad_snr = (snr is not None and snr < MIN_SNR_DB) or not np.all(np.isfinite(b))
    note = ""
    if bad_agreement or bad_snr:
        parts = [f"top-1 agreement {agreement:.2f}"] if agreement is not None else []
        parts += [f"SNR {snr:.1f} dB"] if snr is not None else []
        note = (
            f"while timed, '{role}' answered differently from its own answers on the same inputs outside "
            f"timing ({', '.join(parts) or 'non-finite values'}): the time is not of the model that was checked"
        )
    return TimedOutputs(
        role=role,
        rounds_checked=len(kept),
        top1_agreement=agreement,
        snr_db=snr,
        consistent=not (bad_agreement or bad_snr),
        note=note,
    )


def _fixed_batch_note(models: dict[str, LoadedModel], batch: int) -> str:
    frozen = {role: m.fixed_batch() for role, m in models.items() if m.fixed_batch() not in (None, batch)}
    if not frozen:
        return ""
    named = ", ".join(f"'{role}' to {size}" for role, size in frozen.items())
    return (
        f"not timed at batch {batch}: the file fixes the batch size of {named}. Export with a dynamic batch "
        "axis (torch.onnx.export(..., dynamic_shapes=...) or dynamic_axes={'input': {0: 'batch'}})"
    )


@dataclass
class Planned:
    """A figure made ready to time: its clock (None when it is not timed at all) and what turns the
    clock's rounds into the figure, once every figure of the session has had its turns."""

    clock: Clock | None
    finish: Callable[[], Any]


def time_planned(planned: list[Planned]) -> list[Any]:
    """Every planned figure timed in turns (``measure.run_in_turns``), then each one's figure."""
    run_in_turns([p.clock for p in planned if p.clock is not None])
    return [p.finish() for p in planned]


def plan_pair(
    ref: str,
    cand: str,
    models: dict[str, LoadedModel],
    arrays: dict[str, np.ndarray],
    untimed: dict[str, np.ndarray | None],
    batch: int,
    job: Job,
    budget: float,
    feeds_for: FeedsFor,
) -> Planned:
    """Reference and candidate interleaved on fresh batches, their timed answers checked."""
    timing = job.measure.timing
    note = _fixed_batch_note({ref: models[ref], cand: models[cand]}, batch)
    if note:
        return Planned(None, lambda: _untimed_pair(ref, cand, batch, timing.threads, note))
    draws = Draws(arrays, batch, seed=batch)
    watches = {r: Watch(r, models[r], draws, feeds_for) for r in (ref, cand)}
    device = "cuda" if "cuda" in (models[ref].device, models[cand].device) else "cpu"

    def prepare(_: int) -> None:
        draws.next()
        for watch in watches.values():
            watch.prepare()

    def collect(_: int) -> None:
        for watch in watches.values():
            watch.collect()

    decision = next((d for d in timing.decisions if d.figure == f"{pair_key(ref, cand)}.speedup_b{batch}"), None)
    clock = Clock(
        (watches[ref], watches[cand]),
        budget_s=budget,
        warmup=timing.warmup,
        min_rounds=timing.min_rounds,
        max_rounds=timing.max_rounds,
        prepare=prepare,
        collect=collect,
        settled=_pair_settled(decision, timing) if timing.stop == "verdict" else None,
        **_warmup_time(job, device, budget),
    )

    def finish() -> TimingComparison:
        times = clock.result()
        assert isinstance(times, PairedTimes)
        checked = [watches[r].verdict(untimed.get(r)) for r in (ref, cand)]
        ref_ms, cand_ms = float(np.median(times.reference_s)) * 1e3, float(np.median(times.candidate_s)) * 1e3
        floor = open_half(timing) if times.stopped == "open" else 0.0  # the width it stopped on, at least
        speedup = ratio_estimate(times, session_noise=timing.session_noise, min_half=floor)
        return TimingComparison(
            reference=ref,
            candidate=cand,
            batch_size=batch,
            threads=timing.threads,
            rounds=times.rounds,
            reference_ms=ref_ms,
            candidate_ms=cand_ms,
            speedup=speedup.model_copy(update={"note": stop_note(times.stopped, times.rounds, decision, timing)}),
            reference_items_per_s=batch / ref_ms * 1e3,
            candidate_items_per_s=batch / cand_ms * 1e3,
            timed_outputs=checked,
            stopped=times.stopped,
            device=device,
            reference_transfer_ms=watches[ref].transfer_ms(),
            candidate_transfer_ms=watches[cand].transfer_ms(),
        )

    return Planned(clock, finish)


def _untimed_pair(ref: str, cand: str, batch: int, threads: int, note: str) -> TimingComparison:
    return TimingComparison(
        reference=ref,
        candidate=cand,
        batch_size=batch,
        threads=threads,
        rounds=0,
        reference_ms=None,
        candidate_ms=None,
        speedup=Estimate(value=None, unit="x", note=note),
        reference_items_per_s=None,
        candidate_items_per_s=None,
        note=note,
    )


def _warmup_time(job: Job, device: str, budget: float) -> dict[str, float]:
    """On a GPU, warm-up lasts until the clocks have settled (at least ``warmup_s``); none on the CPU.
    It never takes longer than the figure's own share of the timing budget, so a grading's time
    stays within what the assignment's wall-time limit was set for."""
    if device != "cuda":
        return {}
    cuda = job.measure.cuda
    return {"warmup_s": min(cuda.warmup_s, budget), "max_warmup_s": min(cuda.max_warmup_s, budget)}


def pending_pair(ref: str, cand: str, batch: int, threads: int, reason: str) -> TimingComparison:
    """A pair the assignment times on CUDA, on a machine that cannot: its figures wait for the GPU runner."""
    return TimingComparison(
        reference=ref,
        candidate=cand,
        batch_size=batch,
        threads=threads,
        rounds=0,
        reference_ms=None,
        candidate_ms=None,
        speedup=Estimate(value=None, unit="x", note=reason, pending=True),
        reference_items_per_s=None,
        candidate_items_per_s=None,
        note=reason,
        device="cuda",
    )


def pending_solo(role: str, batch: int, threads: int, reason: str) -> SoloTiming:
    return SoloTiming(
        role=role,
        batch_size=batch,
        threads=threads,
        rounds=0,
        latency_ms=Estimate(value=None, unit="ms", note=reason, pending=True),
        items_per_s=None,
        note=reason,
        device="cuda",
    )


def plan_alone(
    role: str,
    model: LoadedModel,
    arrays: dict[str, np.ndarray],
    untimed: np.ndarray | None,
    batch: int,
    job: Job,
    budget: float,
    feeds_for: FeedsFor,
) -> Planned:
    """One model timed by itself (hw1's latency and throughput), on fresh batches, checked."""
    timing = job.measure.timing
    note = _fixed_batch_note({role: model}, batch)
    if note:
        return Planned(
            None,
            lambda: SoloTiming(
                role=role,
                batch_size=batch,
                threads=timing.threads,
                rounds=0,
                latency_ms=Estimate(value=None, unit="ms", note=note),
                items_per_s=None,
                note=note,
            ),
        )
    draws = Draws(arrays, batch, seed=batch)
    watch = Watch(role, model, draws, feeds_for)

    def prepare(_: int) -> None:
        draws.next()
        watch.prepare()

    clock = Clock(
        (watch,),
        budget_s=budget,
        warmup=timing.warmup,
        min_rounds=timing.min_rounds,
        max_rounds=timing.max_rounds,
        prepare=prepare,
        collect=lambda _: watch.collect(),
        settled=_solo_settled(timing) if timing.stop == "verdict" else None,
        **_warmup_time(job, model.device, budget),
    )

    def finish() -> SoloTiming:
        seconds, stopped = np.array(clock.seconds[0]), clock.stopped or "budget"
        latency = median_estimate(seconds, scale=1e3, unit="ms")
        latency = latency.model_copy(update={"note": stop_note(stopped, int(seconds.size), None, timing, paired=False)})
        return SoloTiming(
            role=role,
            batch_size=batch,
            threads=timing.threads,
            rounds=int(seconds.size),
            latency_ms=latency,
            items_per_s=batch / max(latency.value or 0.0, 1e-9) * 1e3,
            timed_outputs=[watch.verdict(untimed)],
            stopped=stopped,
            device=model.device,
            transfer_ms=watch.transfer_ms(),
        )

    return Planned(clock, finish)


def decision_points(decision: TimingDecision, value: float) -> float:
    """The points the check gives ``value``: linear from ``zero`` to ``full`` (either direction)."""
    low, high = sorted((decision.zero, decision.full))
    fraction = (min(max(value, low), high) - low) / (high - low) if high > low else float(value >= high)
    return decision.points * (fraction if decision.full >= decision.zero else 1 - fraction)


def _pair_settled(decision: TimingDecision | None, timing: TimingSpec):  # noqa: ANN202
    """A scored speedup is settled when both ends of its interval give the same points (and, if a
    leaderboard ranks it, the interval is narrower than ``rel_width`` of it); one that is only
    shown or ranked, when its interval is that narrow. A scored speedup whose check reads the
    favourable end stops "open" once this run's part of its interval is under ``open_width``
    while the session noise's part alone still spans points: no number of rounds narrows that
    part, so the verdict would stay open to the cap."""

    def settled(times: PairedTimes) -> str:
        within = ratio_estimate(times)  # what more rounds can still narrow
        estimate = with_session_noise(within, timing.session_noise)  # what the check reads
        low, high, value = estimate.low, estimate.high, estimate.value
        if low is None or high is None or not value or within.low is None or within.high is None:
            return ""
        width = within.high - within.low
        precise = width <= timing.rel_width * value
        if decision is None:  # shown or ranked, not scored: precise enough to compare
            return "settled" if precise else ""
        if _points_gap(decision, low, high) <= timing.precision_points and (precise or not decision.ranked):
            return "settled"
        if timing.open_width is None or not decision.favourable or width > timing.open_width * value:
            return ""
        session = session_half(timing.session_noise)
        noise_alone = _points_gap(decision, value * math.exp(-session), value * math.exp(session))
        return "open" if noise_alone > timing.precision_points else ""

    return settled


def _points_gap(decision: TimingDecision, low: float, high: float) -> float:
    return abs(decision_points(decision, high) - decision_points(decision, low))


def _solo_settled(timing: TimingSpec):  # noqa: ANN202
    def settled(seconds: np.ndarray) -> str:
        estimate = median_estimate(seconds)
        assert estimate.low is not None and estimate.high is not None and estimate.value is not None
        return "settled" if estimate.high - estimate.low <= timing.rel_width * estimate.value else ""

    return settled


def stop_note(
    stopped: str, rounds: int, decision: TimingDecision | None, timing: TimingSpec, paired: bool = True
) -> str:
    """How many rounds the figure took and why timing stopped, for the report (``paired``: a
    speedup, whose interval also holds the session noise; a solo latency's does not)."""
    if stopped == "settled":
        part = "this run's part of the 95% interval" if timing.session_noise and paired else "the 95% interval"
        why = f"{part} is within {timing.rel_width:.1%} of the figure"
        if decision is not None:
            why = "both ends of the 95% interval give the same points" + (f", and {why}" if decision.ranked else "")
        return f"{rounds} timed rounds; {STOPPED_SETTLED}: {why}"
    if stopped == "open" and timing.open_width is not None:
        return (
            f"{rounds} timed rounds; {STOPPED_OPEN} {timing.open_width:.1%} of the figure, while the "
            f"{timing.session_noise * 100:g}% session noise alone spans more than {timing.precision_points:g} points: "
            "no number of rounds narrows that part, and more rounds could narrow the interval's favourable "
            f"side by at most {math.ceil(open_move(timing) * 1000) / 10:g}% of the figure (this run's part "
            f"counts as at least {timing.open_width:.1%} wide); the verdict was still open, so the favourable "
            "end of the interval decides"
        )
    cap = "its share of the timing budget" if stopped == "budget" else f"the {timing.max_rounds}-round cap"
    if timing.stop == "budget":
        return f"{rounds} timed rounds, the whole budget (sequential stopping is off)"
    open_verdict = (
        "; the verdict was still open, so the favourable end of the interval decides"
        if decision is not None and not decision.ranked
        else "; the interval is what the rounds allowed (the favourable end decides a check)"
    )
    return f"{rounds} timed rounds; stopped at {cap}{open_verdict}"


def open_half(timing: TimingSpec) -> float:
    """The half-width, on the log scale, of an interval ``open_width`` of its figure wide."""
    return math.asinh((timing.open_width or 0.0) / 2)


def open_move(timing: TimingSpec) -> float:
    """How far the favourable end of an "open" speedup's interval lies beyond where endless rounds
    would put it, as a share of the figure: its half-width is the session noise's part and this
    run's (at least ``open_width``) in quadrature, against the session noise's part alone."""
    session = session_half(timing.session_noise)
    return math.exp(math.hypot(session, open_half(timing))) - math.exp(session)
