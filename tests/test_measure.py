"""Measurements (grader.worker.measure): interleaved timing, the ratio estimate, fidelity, size, memory."""

from __future__ import annotations

import gzip
import math
import time
from pathlib import Path

import numpy as np
import pytest

from grader.intake.artifacts import gzip_size
from grader.worker.measure import (
    Clock,
    PairedTimes,
    accuracy,
    block_bootstrap_median,
    kl_divergence,
    max_abs_error,
    median_estimate,
    output_parity,
    pair_round_ratios,
    peak_rss_mb,
    ratio_estimate,
    reset_peak_rss,
    rss_mb,
    run_in_turns,
    snr_db,
    time_interleaved,
    time_single,
    top1_agreement,
    turn_rounds,
)

# --------------------------------------------------------------------------- ratio_estimate


def _paired(rounds: int, ratio: float, noise: float, seed: int) -> PairedTimes:
    """Candidate ~1 ms, reference ``ratio`` times slower; both with independent multiplicative noise."""
    rng = np.random.default_rng(seed)
    candidate = 1e-3 * rng.lognormal(0.0, noise, rounds)
    reference = ratio * 1e-3 * rng.lognormal(0.0, noise, rounds)
    return PairedTimes(reference, candidate)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ratio_estimate_covers_the_true_ratio(seed: int) -> None:
    estimate = ratio_estimate(_paired(60, 2.0, 0.1, seed))
    assert estimate.unit == "x"
    assert estimate.low <= estimate.value <= estimate.high
    assert estimate.low <= 2.0 <= estimate.high
    assert 1.8 < estimate.value < 2.2
    assert estimate.high - estimate.low < 0.5  # an interval, not "anything goes"


def test_ratio_estimate_is_a_speedup_not_a_slowdown() -> None:
    slower = ratio_estimate(_paired(60, 0.5, 0.05, 0))
    assert slower.high < 1.0 and slower.value == pytest.approx(0.5, rel=0.05)


def test_more_rounds_give_a_narrower_interval() -> None:
    few = ratio_estimate(_paired(10, 2.0, 0.2, 7))
    many = ratio_estimate(_paired(400, 2.0, 0.2, 7))
    assert many.high - many.low < 0.5 * (few.high - few.low)
    assert many.low <= 2.0 <= many.high


def test_ratio_estimate_is_reproducible_and_robust_to_outliers() -> None:
    times = _paired(50, 2.0, 0.05, 11)
    times.candidate_s[:3] *= 50  # three rounds where the candidate was preempted
    first, second = ratio_estimate(times), ratio_estimate(times)
    assert first == second
    assert first.value == pytest.approx(2.0, rel=0.05)  # the median shrugs off the outliers


def test_paired_times_rounds() -> None:
    assert _paired(17, 2.0, 0.1, 0).rounds == 17


# --------------------------------------------------------------------------- time_interleaved


def _recorders(log: list[str], delay_s: float = 0.0):  # noqa: ANN202
    def reference() -> None:
        log.append("R")
        if delay_s:
            time.sleep(delay_s)

    def candidate() -> None:
        log.append("C")
        if delay_s:
            time.sleep(delay_s)

    return reference, candidate


def test_time_interleaved_alternates_the_order_every_round() -> None:
    log: list[str] = []
    reference, candidate = _recorders(log)
    times = time_interleaved(reference, candidate, budget_s=0.0, warmup=2, min_rounds=6, max_rounds=50)
    assert times.rounds == 6 and times.candidate_s.size == 6
    assert log[:4] == ["R", "C", "R", "C"]  # warm-up
    rounds = ["".join(log[i : i + 2]) for i in range(4, len(log), 2)]
    assert rounds == ["RC", "CR", "RC", "CR", "RC", "CR"]


def test_time_interleaved_attributes_each_time_to_the_right_model() -> None:
    slow = lambda: time.sleep(0.004)  # noqa: E731
    fast = lambda: None  # noqa: E731
    times = time_interleaved(slow, fast, budget_s=0.0, warmup=0, min_rounds=6)
    # whichever runs first in a round, the reference's column holds the slow call
    assert np.all(times.reference_s >= 0.0035)
    assert np.median(times.candidate_s) < 0.001  # (a median: a no-op can still be preempted once)
    assert ratio_estimate(times).low > 3


def test_time_interleaved_runs_min_rounds_even_without_budget() -> None:
    log: list[str] = []
    times = time_interleaved(*_recorders(log), budget_s=0.0, warmup=0, min_rounds=9, max_rounds=100)
    assert times.rounds == 9 and len(log) == 18


def test_time_interleaved_stops_at_max_rounds() -> None:
    log: list[str] = []
    times = time_interleaved(*_recorders(log), budget_s=60.0, warmup=1, min_rounds=3, max_rounds=25)
    assert times.rounds == 25 and len(log) == 2 + 50


def test_time_interleaved_respects_the_budget() -> None:
    log: list[str] = []
    start = time.perf_counter()
    times = time_interleaved(*_recorders(log, delay_s=0.005), budget_s=0.2, warmup=1, min_rounds=3, max_rounds=10_000)
    elapsed = time.perf_counter() - start
    # each round takes >= 10 ms, so 0.2 s allows at most ~20 rounds (plus the one that crosses it)
    assert 3 <= times.rounds <= 22
    assert elapsed < 0.2 + 0.3  # budget, warm-up, one round past the deadline, slack for a busy CI


def test_time_interleaved_stops_once_settled_and_looks_only_at_whole_pair_rounds() -> None:
    looks: list[int] = []

    def settled(times: PairedTimes) -> bool:
        looks.append(times.rounds)
        return times.rounds >= 16

    log: list[str] = []
    times = time_interleaved(*_recorders(log), budget_s=60.0, warmup=0, min_rounds=6, settled=settled)
    assert times.stopped == "settled" and times.rounds == 16
    assert looks == [8, 12, 16]  # every SETTLE_EVERY rounds once min_rounds are in: AB + BA pairs only


def test_time_interleaved_says_which_cap_stopped_it() -> None:
    never = lambda _: False  # noqa: E731
    assert time_interleaved(lambda: None, lambda: None, budget_s=60.0, max_rounds=20, settled=never).stopped == (
        "max_rounds"
    )
    assert time_interleaved(lambda: None, lambda: None, budget_s=0.0, min_rounds=4, settled=never).stopped == "budget"


# --------------------------------------------------------------------------- figures in turns


def _logged(log: list[str], name: str, delay_s: float = 0.0):  # noqa: ANN202
    def call() -> None:
        log.append(name)
        if delay_s:
            time.sleep(delay_s)

    return call


def test_a_cheap_figure_takes_its_turns_across_the_whole_of_a_slow_ones_timing() -> None:
    log: list[str] = []
    slow = Clock(
        (_logged(log, "S", 0.004), _logged(log, "s", 0.004)), budget_s=60.0, warmup=0, min_rounds=40, max_rounds=40
    )
    cheap = Clock((_logged(log, "C"), _logged(log, "c")), budget_s=60.0, warmup=0, min_rounds=8, max_rounds=4000)
    settled_looks: list[int] = []

    def settled(times: PairedTimes) -> bool:
        settled_looks.append(times.rounds)
        return True  # precise at once: still no stop while the slow figure runs

    cheap.settled = settled
    run_in_turns([slow, cheap])
    assert slow.rounds == 40 and slow.stopped == "max_rounds"
    order = "".join(name for name in log if name in "SC")  # each round's reference call
    slow_at = [i for i, name in enumerate(order) if name == "S"]
    cheap_at = [i for i, name in enumerate(order) if name == "C"]
    # the cheap figure's rounds fall between the slow one's, from its first round to its last
    assert cheap_at[0] < slow_at[2] and cheap_at[-1] > slow_at[-2]
    assert sum(1 for a, b in zip(slow_at, slow_at[1:]) if any(a < c < b for c in cheap_at)) >= 15
    assert cheap.stopped == "settled" and settled_looks == [cheap.rounds]  # it looked once, after the slow one
    assert turn_rounds(cheap.round_s, slow.round_s) > 2


def test_turns_alternate_which_model_goes_first() -> None:
    """Turns hold whole A B + B A pairs, and the first call of a turn (on the coldest cache) goes to
    the reference in one turn and to the candidate in the next."""
    log: list[str] = []
    clock = Clock((_logged(log, "R"), _logged(log, "C")), budget_s=60.0, warmup=0, min_rounds=2, max_rounds=8)
    for _ in range(4):
        clock.turn(2)
    rounds = ["".join(log[i : i + 2]) for i in range(0, len(log), 2)]
    assert rounds == ["RC", "CR", "CR", "RC", "RC", "CR", "CR", "RC"]
    assert clock.result().rounds == 8


def test_a_figures_budget_counts_its_own_rounds_not_the_others() -> None:
    slow = Clock(
        (_logged([], "S", 0.01), _logged([], "s", 0.01)), budget_s=0.5, warmup=1, min_rounds=4, max_rounds=10_000
    )
    cheap = Clock(
        (_logged([], "C", 0.0005), _logged([], "c", 0.0005)), budget_s=0.1, warmup=1, min_rounds=4, max_rounds=10_000
    )
    started = time.perf_counter()
    run_in_turns([slow, cheap])
    elapsed = time.perf_counter() - started
    assert slow.stopped == cheap.stopped == "budget"
    assert 0.1 <= cheap.spent_s < 0.1 + 0.05 and 0.5 <= slow.spent_s < 0.5 + 0.1
    assert elapsed >= slow.spent_s + cheap.spent_s  # taken in turns, one after the other's
    assert elapsed < 0.6 + 0.5  # both budgets, warm-ups, slack for a busy CI


def test_turn_rounds_gives_cheaper_figures_longer_turns() -> None:
    assert turn_rounds(0.1, 0.1) == 2  # the slowest: one A B + B A pair per turn
    assert turn_rounds(0.002, 0.1) == 10  # 10% of the slowest's pair-round
    assert turn_rounds(1e-7, 0.1) == 16  # bounded
    assert turn_rounds(0.0, 0.1) == 2 and all(turn_rounds(r, 1.0) % 2 == 0 for r in (0.3, 0.03, 0.003))


def test_a_turns_warm_up_round_goes_in_the_order_of_its_first_timed_round() -> None:
    """Whichever model the turn times first follows the other model's call, in every turn."""
    log: list[str] = []
    clock = Clock((_logged(log, "R"), _logged(log, "C")), budget_s=60.0, warmup=0, min_rounds=2, max_rounds=8)
    for _ in range(4):
        clock.turn(2, warm_first=True)
    turns = ["".join(log[i : i + 6]) for i in range(0, len(log), 6)]  # a warm-up round and two timed ones
    assert turns == ["RCRCCR", "CRCRRC", "RCRCCR", "CRCRRC"]


def test_a_figure_timed_alone_at_its_round_cap_says_so_even_if_settled() -> None:
    """Only a figure kept from settling (a cheap one while others ran) reads its interval at the cap."""
    times = time_interleaved(lambda: None, lambda: None, budget_s=60.0, max_rounds=20, settled=lambda _: True)
    assert times.stopped == "settled" and times.rounds == 8  # min_rounds, then its first look
    capped = Clock((lambda: None, lambda: None), budget_s=60.0, min_rounds=40, max_rounds=20, settled=lambda _: True)
    capped.turn()
    assert capped.stopped == "max_rounds"


def test_a_figure_at_its_round_cap_is_settled_if_its_interval_says_so() -> None:
    clock = Clock((lambda: None, lambda: None), budget_s=60.0, warmup=0, min_rounds=4, max_rounds=12)
    clock.settled = lambda times: times.rounds >= 12
    clock.turn(4, may_settle=False)
    clock.turn(8, may_settle=False)
    assert clock.stopped is None
    clock.turn()
    assert clock.stopped == "settled" and clock.rounds == 12


def test_a_verdict_that_cannot_close_stops_the_figure_as_open() -> None:
    """``settled`` may say why it stops: "open" is a stop of its own (the report words it so), as
    at the round cap for a figure that was held back; "" goes on, as False does."""
    answers = iter(["", "", "open"])
    times = time_interleaved(lambda: None, lambda: None, budget_s=60.0, min_rounds=4, settled=lambda _: next(answers))
    assert times.stopped == "open" and times.rounds == 12  # looks at 4, 8 and 12 rounds
    clock = Clock((lambda: None, lambda: None), budget_s=60.0, warmup=0, min_rounds=4, max_rounds=12)
    clock.settled = lambda times: "open" if times.rounds >= 12 else ""
    clock.turn(12, may_settle=False)
    clock.turn()
    assert clock.stopped == "open" and clock.rounds == 12
    typo = Clock((lambda: None, lambda: None), budget_s=60.0, warmup=0, min_rounds=4, settled=lambda _: "setled")
    with pytest.raises(AssertionError, match="setled"):
        typo.turn()  # a stop reason the report cannot word fails at once, not after all the timing


def test_a_stopped_open_interval_is_at_least_as_wide_as_it_looked() -> None:
    """The look that stops a figure open reads a noisy width: its interval counts this run's part
    as at least ``min_half`` wide, so a look that read low does not narrow the verdict's end."""
    rng = np.random.default_rng(5)
    candidate = 1e-3 * rng.lognormal(0, 0.01, 32)
    times = PairedTimes(candidate * rng.lognormal(0, 0.01, 32), candidate)
    plain = ratio_estimate(times)
    floored = ratio_estimate(times, min_half=0.05)
    assert math.log(plain.high / plain.value) < 0.05
    assert floored.value == plain.value
    assert math.log(floored.high / floored.value) == pytest.approx(0.05)
    assert math.log(floored.value / floored.low) == pytest.approx(0.05)
    wide = ratio_estimate(times, min_half=0.001)  # a floor under its own width changes nothing
    assert (wide.low, wide.high) == pytest.approx((plain.low, plain.high))


def test_pair_rounds_cancel_an_edge_for_whoever_runs_first() -> None:
    """Equal models, but the first call of every round runs 20% slower (a cold cache)."""
    rounds = 40
    first_is_reference = np.arange(rounds) % 2 == 0
    reference = np.where(first_is_reference, 1.2e-3, 1e-3)
    candidate = np.where(first_is_reference, 1e-3, 1.2e-3)
    per_round = reference / candidate
    assert set(np.round(per_round, 3)) == {1.2, 0.833}  # a naive median lands on either
    units = pair_round_ratios(PairedTimes(reference, candidate))
    assert units.size == rounds // 2 and np.allclose(units, 1.0)


def _drifting(rounds: int, seed: int, ratio: float = 2.0) -> PairedTimes:
    """A shared machine: both models slow down and speed up together (AR(1) load, rho 0.9), and the
    ratio itself wanders with the load a little, as cache pressure makes it do."""
    rng = np.random.default_rng(seed)
    load = np.zeros(rounds)
    for i in range(1, rounds):
        load[i] = 0.9 * load[i - 1] + rng.normal(0, 0.05)
    candidate = 1e-3 * np.exp(load + rng.normal(0, 0.02, rounds))
    reference = ratio * candidate * np.exp(0.5 * load + rng.normal(0, 0.02, rounds))
    return PairedTimes(reference, candidate)


def test_the_block_bootstrap_interval_is_wider_under_drift_than_an_independent_one() -> None:
    """Rounds next to each other are alike under drift: treating them as independent gives an
    interval too narrow; blocks keep that dependence in the resamples."""
    widths = []
    for seed in range(30):
        times = _drifting(64, seed)
        units = pair_round_ratios(times)
        low, high = block_bootstrap_median(units, seed)
        rng = np.random.default_rng(seed)
        iid = np.median(units[rng.integers(0, units.size, size=(2000, units.size))], axis=1)
        widths.append((high - low) / (np.percentile(iid, 97.5) - np.percentile(iid, 2.5)))
    assert np.median(widths) > 1.1


def test_the_batch_means_interval_holds_up_under_drift_where_an_independent_one_does_not() -> None:
    """200 drifting gradings of 128 rounds (seeded, so the same on every machine): the speedup's
    batch-means interval covers the true ratio far more often than a t-interval that treats every
    pair-round as independent (measured: 83% against 45%)."""
    batch_means = independent = 0
    for seed in range(200):
        times = _drifting(128, seed)
        estimate = ratio_estimate(times)
        batch_means += estimate.low <= 2.0 <= estimate.high
        logs = np.log(pair_round_ratios(times))
        half = 1.96 * logs.std(ddof=1) / np.sqrt(logs.size)
        independent += np.exp(logs.mean() - half) <= 2.0 <= np.exp(logs.mean() + half)
    assert batch_means / 200 >= 0.72 and independent / 200 <= 0.6


def test_a_model_slow_half_the_time_is_timed_as_slow() -> None:
    """Only preempted-looking outliers are dropped: a baseline slow in 40% of its rounds (a
    data-dependent detour) still counts, so the speedup is not inflated by dropping them, and a
    handful of 100x spikes in the baseline do not inflate it either."""
    times = _paired(80, 2.0, 0.05, 5)
    spiky = PairedTimes(times.reference_s.copy(), times.candidate_s)
    spiky.reference_s[[3, 17, 41]] *= 100
    assert ratio_estimate(spiky).value == pytest.approx(2.0, rel=0.05)
    slow = PairedTimes(times.reference_s.copy(), times.candidate_s)
    slow.reference_s[np.arange(80) % 5 < 2] *= 3  # 40% of the rounds three times slower
    assert ratio_estimate(slow).value > 3.0  # counted, not dropped: the mean sees them


def test_session_noise_widens_the_interval_by_what_more_rounds_cannot_narrow() -> None:
    """A perfectly steady 2x: no within-run spread at all, so the interval is the session noise
    alone (1.96 relative deviations each way); with noise in the rounds too, the two add in
    quadrature (wider than either, narrower than their sum)."""
    steady = PairedTimes(np.full(40, 2e-3), np.full(40, 1e-3))
    alone = ratio_estimate(steady, session_noise=0.02)
    assert alone.value == pytest.approx(2.0)
    assert alone.low == pytest.approx(2.0 / 1.02**1.96) and alone.high == pytest.approx(2.0 * 1.02**1.96)
    noisy = _paired(60, 2.0, 0.05, 3)
    within, both = ratio_estimate(noisy), ratio_estimate(noisy, session_noise=0.02)
    w, n, s = np.log(within.high / within.value), np.log(both.high / both.value), 1.96 * np.log(1.02)
    assert max(w, s) < n < w + s
    assert both.value == within.value


# --------------------------------------------------------------------------- fidelity


def test_snr_db_of_identical_outputs_is_capped_at_200() -> None:
    x = np.random.default_rng(0).normal(size=(32, 10)).astype(np.float32)
    assert snr_db(x, x.copy()) == 200.0


@pytest.mark.parametrize("relative_noise, expected_db", [(0.1, 20.0), (0.01, 40.0), (1.0, 0.0)])
def test_snr_db_of_known_noise(relative_noise: float, expected_db: float) -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(64, 10))
    noise = rng.normal(size=reference.shape)
    noise *= relative_noise * np.linalg.norm(reference) / np.linalg.norm(noise)  # exact power ratio
    assert snr_db(reference, reference + noise) == pytest.approx(expected_db, abs=0.1)


def test_snr_db_handles_degenerate_inputs() -> None:
    assert snr_db(np.zeros((2, 3)), np.ones((2, 3))) is None  # no signal to compare against
    assert snr_db(np.zeros((2, 3)), np.zeros((2, 3))) == 200.0
    assert snr_db(np.ones((2, 3)), np.ones((3, 2))) is None


def test_top1_agreement() -> None:
    reference = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    candidate = np.array([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    assert top1_agreement(reference, candidate) == 0.75
    assert top1_agreement(reference, reference) == 1.0
    assert top1_agreement(reference, candidate[:3]) is None
    assert top1_agreement(reference[:, 0], candidate[:, 0]) is None  # no class axis


def test_max_abs_error() -> None:
    reference = np.array([[1.0, -2.0], [3.0, 4.0]], np.float32)
    candidate = np.array([[1.5, -2.0], [3.0, 1.0]], np.float32)
    assert max_abs_error(reference, candidate) == 3.0
    assert max_abs_error(reference, reference) == 0.0
    assert max_abs_error(np.zeros((0, 2)), np.zeros((0, 2))) == 0.0
    assert max_abs_error(reference, candidate.T[:1]) is None


def test_accuracy() -> None:
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 1.0], [5.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1, 2])
    assert accuracy(logits, labels) == 0.5
    assert accuracy(logits, np.array([0, 1, 2, 0])) == 1.0


def test_accuracy_refuses_mismatched_shapes() -> None:
    logits = np.zeros((4, 3))
    assert accuracy(logits, np.zeros(5, np.int64)) is None  # more labels than rows
    assert accuracy(logits[0], np.zeros(1, np.int64)) is None  # logits without a batch axis
    assert accuracy(logits, np.zeros((4, 3), np.int64)) is None  # one-hot labels are not class ids


def test_accuracy_accepts_labels_saved_as_a_column() -> None:
    """[N, 1] labels used to broadcast against [N] predictions into an [N, N] table."""
    logits = np.eye(4)
    column = np.array([[0], [1], [2], [0]])
    assert accuracy(logits, column) == 0.75
    assert accuracy(logits, column) == accuracy(logits, column.reshape(-1))


# --------------------------------------------------------------------------- size and memory


def test_gzip_size_matches_gzip_level_6(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # 3 MB of low-entropy bytes: compressible, and larger than the 1 MiB read block
    data = rng.integers(0, 16, 3_000_000, dtype=np.uint8).tobytes()
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    size = gzip_size([path])
    assert size == len(gzip.compress(data, 6))
    assert size < len(data) * 0.7
    (tmp_path / "empty.bin").write_bytes(b"")
    assert gzip_size([tmp_path / "empty.bin"]) == len(gzip.compress(b"", 6))


def test_rss_mb_sees_touched_memory() -> None:
    before = rss_mb()
    block = np.ones(100 * 2**20 // 8)  # 100 MiB, written so every page is resident
    after = rss_mb()
    assert block[-1] == 1.0
    assert after - before >= 80


def test_peak_rss_is_reset_and_then_grows_with_an_allocation() -> None:
    block = np.ones(250 * 2**20 // 8)  # raise the high-water mark first...
    del block
    if not reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its own VmHWM")
    start = peak_rss_mb()
    assert start <= rss_mb() + 20  # ...so the reset really lowered it to about the current RSS
    block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
    assert block.sum() == block.size
    grown = peak_rss_mb() - start
    del block
    assert grown >= 150
    assert peak_rss_mb() >= rss_mb()


# --------------------------------------------------------------------------- single-model timing, KL, parity


def test_time_single_runs_min_rounds_then_respects_the_budget() -> None:
    calls = []
    times, stopped = time_single(lambda: calls.append(1), budget_s=0.0, warmup=2, min_rounds=5)
    assert times.size == 5 and len(calls) == 7 and stopped == "budget"  # 2 warm-up calls are not timed
    started = time.perf_counter()
    times, _ = time_single(lambda: time.sleep(0.002), budget_s=0.1, warmup=0, min_rounds=1, max_rounds=10_000)
    assert 0.09 < time.perf_counter() - started < 1.0
    assert np.all(times >= 0.002)


def test_time_single_stops_once_settled() -> None:
    looks: list[int] = []

    def settled(seconds: np.ndarray) -> bool:
        looks.append(seconds.size)
        return seconds.size >= 12

    times, stopped = time_single(lambda: None, budget_s=60.0, warmup=0, min_rounds=8, settled=settled)
    assert stopped == "settled" and times.size == 12 and looks == [8, 12]


def test_median_estimate_has_an_interval_around_the_median() -> None:
    rng = np.random.default_rng(0)
    samples = 1e-3 * rng.lognormal(0.0, 0.1, 200)
    estimate = median_estimate(samples, scale=1e3, unit="ms")
    assert estimate.unit == "ms"
    assert estimate.value == pytest.approx(float(np.median(samples)) * 1e3)
    assert estimate.low < estimate.value < estimate.high
    assert estimate.high - estimate.low < 0.1


def test_kl_divergence_is_zero_for_identical_and_matches_the_definition() -> None:
    rng = np.random.default_rng(1)
    teacher, student = rng.normal(size=(50, 10)), rng.normal(size=(50, 10))
    assert kl_divergence(teacher, teacher) == pytest.approx(0.0, abs=1e-12)
    p = np.exp(teacher) / np.exp(teacher).sum(1, keepdims=True)
    q = np.exp(student) / np.exp(student).sum(1, keepdims=True)
    assert kl_divergence(teacher, student) == pytest.approx(float(np.mean(np.sum(p * np.log(p / q), 1))))
    assert kl_divergence(teacher, teacher + 100.0) == pytest.approx(0.0, abs=1e-9)  # softmax ignores a shift
    assert kl_divergence(teacher[:, :1].ravel(), student[:, :1].ravel()) is None  # not [N, classes]


@pytest.mark.parametrize("noise", [1e-7, 1e-5, 1e-3])
def test_output_parity_agrees_with_numpy_allclose(noise: float) -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(64, 10)).astype(np.float32)
    candidate = reference + rng.normal(scale=noise, size=reference.shape).astype(np.float32)
    parity = output_parity("logits", reference, candidate, atol=1e-5, rtol=1e-4)
    assert (parity.tolerance_ratio <= 1) == np.allclose(candidate, reference, rtol=1e-4, atol=1e-5)
    assert parity.max_abs_error == pytest.approx(float(np.abs(candidate - reference).max()), rel=1e-6)
    assert parity.shape == [64, 10] and parity.nonfinite == 0


def test_output_parity_counts_nan_and_refuses_other_shapes() -> None:
    reference = np.ones((4, 3), np.float32)
    broken = reference.copy()
    broken[0, 0] = np.nan
    parity = output_parity("y", reference, broken, atol=1e-4, rtol=1e-3)
    assert parity.nonfinite == 1 and parity.tolerance_ratio is None and "NaN" in parity.note
    other = output_parity("y", reference, np.ones((4, 2), np.float32), atol=1e-4, rtol=1e-3)
    assert other.max_abs_error is None and "differs" in other.note
