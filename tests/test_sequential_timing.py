"""Verdict-driven timing: a grading stops timing once no more rounds can change a verdict, and
says so; a figure on a threshold is timed to the cap and decided by the documented rule.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from grader import exitcodes
from grader.checks.decisions import timing_decisions
from grader.checks.shared import linear
from grader.config.assignment import load_assignment
from grader.contracts.job import TimingDecision
from grader.contracts.result import CheckStatus
from grader.worker.timing import decision_points
from tests.builders import check_of
from tests.grading import grade

ROOT = Path(__file__).resolve().parent.parent
HW2 = "hw2-quantization-pruning"
SOLUTION = ROOT / "reference" / "solutions" / HW2


def test_the_worker_scores_a_speedup_as_the_check_will() -> None:
    """The worker's stopping rule and the thresholds rule must agree on every value's points."""
    rng = np.random.default_rng(0)
    for full, zero in ((1.3, 1.0), (1.2, 0.9), (1.0, 2.0)):
        decision = TimingDecision(figure="a_vs_b.speedup_b1", full=full, zero=zero, points=10)
        for value in rng.uniform(0.5, 2.5, 200):
            expected = 10 * (linear(value, full, zero) if full >= zero else linear(-value, -full, -zero))
            assert decision_points(decision, value) == pytest.approx(expected)


def test_timing_decisions_are_the_assignments_scored_speedups() -> None:
    (hw2,) = timing_decisions(load_assignment(HW2))
    assert (hw2.figure, hw2.full, hw2.zero, hw2.points) == ("candidate_vs_baseline.speedup_b64", 1.3, 1.0, 10)
    assert hw2.ranked  # hw2's leaderboard plots it: it must be precise, not only decided
    (hw6,) = timing_decisions(load_assignment("hw6-export"))
    assert hw6.figure == "onnx_vs_source.speedup_b1"
    assert timing_decisions(load_assignment("final-project")) == []  # ranked, not scored: settled by precision


def _root(tmp_path: Path, **timing: float) -> Path:
    """The real assignments, hw2 without its leaderboard: its speedup is then scored, not ranked,
    so only the verdict has to be certain."""
    root = tmp_path / "assignments"
    shutil.copytree(ROOT / "assignments", root)
    path = root / HW2 / "assignment.yaml"
    config = yaml.safe_load(path.read_text())
    config["measure"]["timing"].update(timing)
    config.pop("leaderboard", None)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def test_a_clear_speedup_settles_long_before_the_cap(reference_paths, tmp_path: Path) -> None:
    """The staff solution's ~4x against a 1.3x bar: decided after a few rounds, not 16 s of them."""
    grading = grade(SOLUTION, _root(tmp_path))
    assert grading.exit_code == exitcodes.GRADED
    speedup = check_of(grading.result, "speedup")
    assert speedup.status is CheckStatus.PASS
    assert "stopped once settled: both ends of the 95% interval give the same points" in speedup.message
    b64 = (
        next(t for t in grading.result.observations_summary.timing if t.batch_size == 64)
        if hasattr(grading.result, "observations_summary")
        else None
    )
    del b64
    note = grading.result.metrics["candidate_vs_baseline.speedup_b64"].note
    rounds = int(note.split()[0])
    assert rounds < 60, note  # 16 s would allow ~180 rounds at batch 64


def test_a_speedup_on_its_threshold_is_timed_to_the_cap_and_says_so(reference_paths, tmp_path: Path) -> None:
    """The same model as baseline and candidate (a true 1.0x, on the zero-points end of the bar):
    no number of rounds puts both interval ends on the same points, so the cap decides."""
    folder = tmp_path / "same"
    shutil.copytree(SOLUTION, folder)
    shutil.copy(SOLUTION / "baseline.onnx", folder / "compressed.onnx")
    grading = grade(folder, _root(tmp_path, budget_s=1.0))
    assert grading.exit_code == exitcodes.GRADED
    speedup = check_of(grading.result, "speedup")
    assert "the verdict was still open, so the favourable end of the interval decides" in speedup.message
    estimate = grading.result.metrics["candidate_vs_baseline.speedup_b64"]
    assert 0.8 < estimate.value < 1.25  # an A/A ratio sits around 1 (how often its interval covers 1: benchmarks/)


def test_a_ranked_speedup_is_timed_until_precise_as_well_as_decided() -> None:
    from grader.contracts.job import TimingSpec
    from grader.worker.measure import PairedTimes
    from grader.worker.timing import _pair_settled

    rng = np.random.default_rng(0)
    candidate = 1e-3 * rng.lognormal(0, 0.15, 32)
    times = PairedTimes(3.0 * candidate * rng.lognormal(0, 0.15, 32), candidate)  # ~3x, +-15% per round
    spec = TimingSpec(rel_width=0.02)
    scored = TimingDecision(figure="a_vs_b.speedup_b64", full=1.3, zero=1.0, points=10)
    assert _pair_settled(scored, spec)(times)  # 3x against a 1.3x bar: decided
    assert not _pair_settled(scored.model_copy(update={"ranked": True}), spec)(times)  # not within 2% yet


def test_session_noise_never_keeps_a_precise_figure_timing() -> None:
    """Session noise is in the interval the check reads, but more rounds cannot narrow it: a ranked
    figure whose rounds are steady is precise, whatever the noise floor, and a figure near its
    threshold stays open while the floor still spans points."""
    from grader.contracts.job import TimingSpec
    from grader.worker.measure import PairedTimes
    from grader.worker.timing import _pair_settled

    rng = np.random.default_rng(1)
    candidate = 1e-3 * rng.lognormal(0, 0.005, 64)
    steady = PairedTimes(3.0 * candidate * rng.lognormal(0, 0.005, 64), candidate)  # ~3x, +-0.5% per round
    spec = TimingSpec(rel_width=0.02, session_noise=0.05)  # the floor alone is ~20% wide
    ranked = TimingDecision(figure="a_vs_b.speedup_b64", full=1.3, zero=1.0, points=10, ranked=True)
    assert _pair_settled(ranked, spec)(steady)
    on_threshold = TimingDecision(figure="a_vs_b.speedup_b64", full=3.05, zero=2.5, points=10)
    assert not _pair_settled(on_threshold, spec)(steady)  # the floor spans points: the favourable end decides
    assert _pair_settled(on_threshold, TimingSpec(rel_width=0.02))(steady)  # without it, decided (below full)


def _steady_ratio(seed: int, ratio: float, per_round: float, rounds: int = 64):  # noqa: ANN202
    from grader.worker.measure import PairedTimes

    rng = np.random.default_rng(seed)
    candidate = 1e-3 * rng.lognormal(0, per_round, rounds)
    return PairedTimes(ratio * candidate * rng.lognormal(0, per_round, rounds), candidate)


def _times_with(centre: float, half: float):  # noqa: ANN202
    """Paired times whose speedup is ``centre`` with a within-run 95% half-width of ``half`` on the
    log scale: 8 batches of 4 pair-rounds, half of them ``delta`` above the centre, half below."""
    from grader.worker.measure import BATCHES, T_975, PairedTimes

    delta = half * math.sqrt(BATCHES) / T_975[BATCHES - 1] / math.sqrt(BATCHES / (BATCHES - 1))
    units = np.repeat([math.log(centre) + delta * (1 if j % 2 else -1) for j in range(BATCHES)], 4)
    ratios = np.exp(np.repeat(units, 2))  # both rounds of a pair-round alike
    candidate = np.full(ratios.size, 1e-3)
    return PairedTimes(candidate * ratios, candidate)


def test_the_constructed_times_have_the_interval_asked_for() -> None:
    from grader.worker.measure import ratio_estimate

    within = ratio_estimate(_times_with(1.1, 0.02))
    assert within.value == pytest.approx(1.1, rel=1e-9)
    assert math.log(within.high / within.value) == pytest.approx(0.02, rel=1e-6)


def test_a_verdict_the_session_noise_keeps_open_stops_once_this_runs_part_is_narrow() -> None:
    """On a threshold, the session noise alone spans points whatever the rounds: the figure stops
    "open" once this run's part of its interval is under ``open_width``, and not before; a clear
    verdict still settles, and without ``open_width`` an open one goes on to the cap."""
    from grader.contracts.job import TimingSpec
    from grader.worker.timing import _pair_settled

    spec = TimingSpec(rel_width=0.118, session_noise=0.03, open_width=0.052)  # hw2's
    narrow, wide = math.asinh(0.050 / 2), math.asinh(0.056 / 2)  # 5.0% and 5.6% wide
    ranked = TimingDecision(figure="a_vs_b.speedup_b64", full=1.3, zero=1.0, points=10, ranked=True)
    settled = _pair_settled(ranked, spec)
    assert settled(_times_with(1.0, narrow)) == "open"  # an A/A pair on the zero-points end
    assert settled(_times_with(1.15, narrow)) == "open"  # midway
    assert settled(_times_with(1.0, wide)) == ""  # this run's part still wider than open_width
    assert settled(_times_with(3.0, narrow)) == "settled"  # 3x: full points at either end
    assert _pair_settled(ranked, spec.model_copy(update={"open_width": None}))(_times_with(1.0, narrow)) == ""
    assert _pair_settled(None, spec)(_times_with(1.0, narrow)) == "settled"  # shown, not scored: precise suffices
    strict = ranked.model_copy(update={"favourable": False})  # a check that reads the figure itself
    assert _pair_settled(strict, spec)(_times_with(1.0, narrow)) == ""  # more rounds do move its verdict


def test_a_verdict_more_rounds_could_close_does_not_stop_open() -> None:
    """At 0.948x the session noise alone spans 0.15 points (its top end 1.0045x), under the 0.25 a
    verdict may differ by: more rounds can settle it, so it must not stop open, though with this
    run's part it still spans more (0.33 points) and that part is under ``open_width``."""
    from grader.contracts.job import TimingSpec
    from grader.worker.timing import _pair_settled, decision_points

    spec = TimingSpec(rel_width=0.118, session_noise=0.03, open_width=0.052)
    decision = TimingDecision(figure="a_vs_b.speedup_b64", full=1.3, zero=1.0, points=10)
    session = 1.96 * math.log1p(0.03)
    assert decision_points(decision, 0.948 * math.exp(session)) < 0.2
    assert decision_points(decision, 0.948 * math.exp(math.hypot(session, 0.025))) > 0.3
    assert _pair_settled(decision, spec)(_times_with(0.948, 0.025)) == ""
    assert _pair_settled(decision, spec)(_times_with(0.948, 0.005)) == "settled"  # more rounds did close it


def test_open_width_is_bounded_by_the_session_noise_and_rel_width() -> None:
    """An open stop means the session noise keeps the verdict open: an assignment without it, or
    one whose ``open_width`` is wider than the noise's part or than ``rel_width``, is refused."""
    from pydantic import ValidationError

    from grader.contracts.job import TimingSpec

    with pytest.raises(ValidationError, match="open_width needs session_noise"):
        TimingSpec(open_width=0.05)
    with pytest.raises(ValidationError, match="must be at most rel_width"):
        TimingSpec(open_width=0.2, session_noise=0.01, rel_width=0.3)  # the noise's part is 3.9% wide
    with pytest.raises(ValidationError, match="must be at most rel_width"):
        TimingSpec(open_width=0.06, session_noise=0.03, rel_width=0.05)
    assert TimingSpec(open_width=0.05, session_noise=0.02, rel_width=0.078).open_width == 0.05


def test_a_threshold_speedup_stops_open_and_is_scored_by_its_favourable_end(reference_paths, tmp_path: Path) -> None:
    """An A/A pair on hw2's zero-points end, with a 20% session noise and an ``open_width`` of 60%,
    which any 16 rounds reach (an A/A pair's 16-round interval is ~10-20% wide here: a margin no
    machine crosses): it stops at its first look, says why, counts this run's part as at least
    60% wide, and gets the points of the top of its interval."""
    folder = tmp_path / "same"
    shutil.copytree(SOLUTION, folder)
    shutil.copy(SOLUTION / "baseline.onnx", folder / "compressed.onnx")
    root = _root(tmp_path, session_noise=0.2, open_width=0.6, rel_width=0.6, min_rounds=16)
    grading = grade(folder, root)
    assert grading.exit_code == exitcodes.GRADED
    estimate = grading.result.metrics["candidate_vs_baseline.speedup_b64"]
    assert estimate.note.startswith(
        "16 timed rounds; stopped open once this run's part of the 95% interval was within 60.0%"
    )
    floor = math.hypot(1.96 * math.log1p(0.2), math.asinh(0.3))  # both parts' half-widths, on the log scale
    assert math.log(estimate.high / estimate.value) >= floor - 1e-9
    speedup = check_of(grading.result, "speedup")
    assert "the verdict was still open, so the favourable end of the interval decides" in speedup.message
    decision = TimingDecision(figure="candidate_vs_baseline.speedup_b64", full=1.3, zero=1.0, points=10)
    assert speedup.points == pytest.approx(decision_points(decision, estimate.high), abs=0.01)
    assert speedup.points > 0  # the interval's top is above 1.0: an A/A pair's favourable end earns some


def test_the_stop_note_says_which_part_of_the_interval_was_precise() -> None:
    """With session noise in the interval, only this run's part of it narrows with rounds: the
    note says that part is what reached rel_width."""
    from grader.contracts.job import TimingSpec
    from grader.worker.timing import stop_note

    ranked = TimingDecision(figure="a_vs_b.speedup_b64", full=1.3, zero=1.0, points=10, ranked=True)
    noisy = stop_note("settled", 48, ranked, TimingSpec(rel_width=0.078, session_noise=0.02))
    assert "same points, and this run's part of the 95% interval is within 7.8% of the figure" in noisy
    assert "the 95% interval is within 6.0% of the figure" in stop_note("settled", 48, None, TimingSpec(rel_width=0.06))
    opened = stop_note("open", 36, ranked, TimingSpec(rel_width=0.118, session_noise=0.03, open_width=0.052))
    assert opened.startswith("36 timed rounds; stopped open once this run's part of the 95% interval was within 5.2%")
    assert "while the 3% session noise alone spans more than 0.25 points" in opened
    assert "by at most 0.6% of the figure" in opened and opened.endswith("the favourable end of the interval decides")
    solo = stop_note("settled", 48, None, TimingSpec(rel_width=0.06, session_noise=0.02), paired=False)
    assert (
        "the 95% interval is within 6.0%" in solo and "this run's part" not in solo
    )  # a latency holds no session noise
