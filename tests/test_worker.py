"""Worker measurements in process (no sandbox): batch probe, solo timing, output comparison, MACs."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from grader.contracts.job import Job, MeasureSpec, ModelJob, Pair, ProbeSpec, TimingSpec
from grader.contracts.problem import Problem
from grader.errors import SubmissionError
from grader.worker.memory import HEADER, NOT_FORKED, Forked, measure_in_fork, measure_in_forks, parse_answer
from grader.worker.runtime import load_model
from grader.worker.session import (
    CHECKED_ROWS,
    answers_agree,
    batch_probe,
    compare_outputs,
    count_macs,
    fault,
    feeds_for,
    observe_model,
    run_all,
)
from grader.worker.timing import plan_alone, time_planned
from tests import builders


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("worker")
    model = builders.trained_tiny(epochs=1)
    return {
        "dynamic": builders.export(model, folder / "dynamic.onnx"),
        "fixed": builders.export_fixed_batch(model, folder / "fixed.onnx"),
        "arrays": {"input": builders.digits()[2]},
    }


def test_probe_of_a_dynamic_batch_model_agrees_row_by_row(exported) -> None:
    model = load_model(exported["dynamic"], "onnx", threads=1)
    probe = batch_probe(model, "onnx", exported["arrays"], ProbeSpec(roles=["onnx"], batch_size=8))
    assert probe.single_ok and probe.batch_ok and probe.shapes_consistent and probe.single_shapes_stable
    assert probe.single_shapes == [[1, 10]] and probe.batch_shapes == [[8, 10]]
    assert probe.outputs[0].tolerance_ratio <= 1 and probe.repeat_max_abs_error == 0.0
    assert probe.fixed_batch is None and probe.error == ""


def test_probe_of_a_frozen_batch_model_records_the_failure(exported) -> None:
    model = load_model(exported["fixed"], "onnx", threads=1)
    probe = batch_probe(model, "onnx", exported["arrays"], ProbeSpec(roles=["onnx"], batch_size=8))
    assert probe.fixed_batch == 1
    assert probe.single_ok and probe.single_shapes_stable and not probe.batch_ok
    assert "batch 8" in probe.error and not probe.shapes_consistent
    assert probe.repeat_max_abs_error == 0.0  # repeatability judged on batch 1 instead


def test_solo_timing_reports_latency_with_an_interval_and_throughput(exported) -> None:
    model = load_model(exported["dynamic"], "onnx", threads=1)
    job = Job(models=[], inputs=None, measure=MeasureSpec(timing=TimingSpec(budget_s=0.2, warmup=1, min_rounds=5)))
    untimed = run_all(model, "baseline", exported["arrays"], 64)[0]
    (timing,) = time_planned([plan_alone("baseline", model, exported["arrays"], untimed, 16, job, 0.2, feeds_for)])
    assert timing.batch_size == 16 and timing.rounds >= 5
    (checked,) = timing.timed_outputs
    assert checked.consistent and checked.rounds_checked >= 5 and checked.snr_db > 40
    assert timing.latency_ms.low <= timing.latency_ms.value <= timing.latency_ms.high
    assert timing.items_per_s == pytest.approx(16 / timing.latency_ms.value * 1e3)


def test_compare_outputs_reports_every_output_and_a_count_mismatch() -> None:
    rng = np.random.default_rng(0)
    ref = [rng.normal(size=(20, 10)), rng.normal(size=(20, 3))]
    cand = [ref[0] + 1e-6, ref[1] + 0.5]
    comparison = compare_outputs(
        Pair(reference="source", candidate="onnx", atol=1e-4, rtol=1e-3), ref, cand, ["logits", "aux"]
    )
    assert [o.name for o in comparison.outputs] == ["logits", "aux"]
    assert comparison.outputs[0].tolerance_ratio < 1 < comparison.outputs[1].tolerance_ratio
    assert comparison.kl_divergence == pytest.approx(0.0, abs=1e-9) and comparison.note == ""
    short = compare_outputs(Pair(reference="source", candidate="onnx"), ref, cand[:1], ["logits"])
    assert "1 output(s)" in short.note and "has 2" in short.note


def test_macs_of_a_frozen_batch_model_are_per_sample(exported, tmp_path: Path) -> None:
    model = builders.trained_tiny(epochs=1)
    frozen = load_model(builders.export_fixed_batch(model, tmp_path / "b4.onnx", batch=4), "onnx", threads=1)
    dynamic = load_model(exported["dynamic"], "onnx", threads=1)
    per_sample = count_macs(dynamic, "onnx", exported["arrays"]).macs
    assert per_sample and count_macs(frozen, "onnx", exported["arrays"]).macs == per_sample


def _always(_first) -> bool:
    return True


def _forked_run(path: Path, arrays: dict[str, np.ndarray], batch: int):
    def load_and_run(first_batch_done):
        model = load_model(path, "onnx", threads=1)
        return run_all(model, "baseline", arrays, batch, first_batch_done)

    return measure_in_fork(load_and_run, _always)


@pytest.mark.parametrize("kind", ["dynamic", "fixed"])
def test_the_fork_sends_back_the_outputs_the_worker_would_compute(exported, kind) -> None:
    """The untimed answers come from the fork that measured the peak; they must be the ones the
    worker computes itself, for a dynamic batch and for one frozen to 1 (padded chunks)."""
    arrays = exported["arrays"]
    forked = _forked_run(exported[kind], arrays, 64)
    model = load_model(exported[kind], "onnx", threads=1)
    here = run_all(model, "baseline", arrays, 64)
    assert forked.peak_mb is not None and forked.peak_mb > 0 and forked.problem is None
    assert forked.outputs is not None and len(forked.outputs) == len(here)
    for sent, computed in zip(forked.outputs, here):
        assert sent.shape == computed.shape == (arrays["input"].shape[0], 10) and sent.dtype == computed.dtype
        np.testing.assert_allclose(sent, computed, rtol=1e-5, atol=1e-6)
    first = run_all(model, "baseline", {"input": arrays["input"][:CHECKED_ROWS]}, 64)
    assert answers_agree(forked.outputs, first)  # what observe_model checks before it takes them


def test_answers_that_do_not_start_with_the_workers_own_are_not_taken() -> None:
    rng = np.random.default_rng(0)
    sent = [rng.normal(size=(100, 10)).astype(np.float32), np.arange(100)]
    here = [sent[0][:32].copy(), sent[1][:32].copy()]
    assert answers_agree(sent, here)
    assert answers_agree(sent, [here[0] * (1 + 1e-5), here[1]])  # a batch size's rounding
    assert not answers_agree(sent, [here[0] + 0.05, here[1]])  # another model's answers
    assert not answers_agree(sent, [here[0], here[1] + 1])
    assert not answers_agree(sent, here[:1]) and not answers_agree(sent, [here[0].astype(np.float64), here[1]])


def test_the_peak_is_read_after_the_first_batch_so_the_answers_kept_do_not_count() -> None:
    def load_and_run(first_batch_done):
        # 64 MiB held at the first batch: above glibc's largest mmap threshold (32 MiB), so new
        # pages even in a process whose heap already holds freed memory (a test worker's)
        held = np.ones(64 << 20 >> 3)
        first_batch_done([held])
        return [held, np.ones(128 << 20 >> 3)]  # 128 MiB of answers made afterwards

    forked = measure_in_fork(load_and_run, _always)
    assert forked.peak_mb is not None and 60 <= forked.peak_mb < 120
    assert [o.nbytes for o in forked.outputs] == [64 << 20, 128 << 20]


def _holding(mib: int, answer: float):  # noqa: ANN202
    """A child that holds ``mib`` and answers ``answer``, then when it started and ended (the
    system-wide monotonic clock), so a test reads whether two children overlapped from their own
    spans, not from a wall time a busy machine stretches."""

    def load_and_run(first_batch_done):
        started = time.monotonic()
        held = np.full(mib << 20 >> 3, answer)
        first_batch_done([held[:4]])
        time.sleep(1.0)  # the rest of the inputs: the other child measures meanwhile, or waits
        return [held[:4], np.array([started, time.monotonic()])]

    return load_and_run


def _overlapped(first: Forked, second: Forked) -> bool:
    """Whether ``second`` started before ``first`` ended."""
    assert first.outputs is not None and second.outputs is not None
    return float(second.outputs[1][0]) < float(first.outputs[1][1])


def _timed_forks(work, overlap_mb: float) -> tuple[list[Forked], float]:  # noqa: ANN001
    started = time.perf_counter()
    forked = measure_in_forks(work, overlap_mb=overlap_mb)
    return forked, time.perf_counter() - started


def test_a_small_first_peak_lets_the_next_fork_run_beside_it_and_each_reads_its_own() -> None:
    """A child's high-water mark is its own: 96 MiB next to 32 MiB reads as each does alone."""
    (big, small), together = _timed_forks([(_holding(96, 1.0), _always), (_holding(32, 2.0), _always)], 1024)
    assert big.peak_mb is not None and 90 <= big.peak_mb < 150
    assert small.peak_mb is not None and 28 <= small.peak_mb < 60
    assert big.outputs is not None and small.outputs is not None
    assert float(big.outputs[0][0]) == 1.0 and float(small.outputs[0][0]) == 2.0  # each its own answers
    assert _overlapped(big, small) and together < 2.0  # side by side: each child sleeps 1 s after its first batch
    alone = measure_in_fork(_holding(32, 2.0), _always)
    assert alone.peak_mb is not None and abs(alone.peak_mb - small.peak_mb) < 16


def test_a_first_peak_over_the_overlap_bound_makes_the_next_fork_wait() -> None:
    (big, small), one_by_one = _timed_forks([(_holding(96, 1.0), _always), (_holding(32, 2.0), _always)], 64)
    assert one_by_one >= 2.0  # 96 MiB is over 64: the second child started after the first ended
    assert big.outputs is not None and small.outputs is not None and small.peak_mb is not None
    assert not _overlapped(big, small)
    (small, big), _ = _timed_forks([(_holding(32, 2.0), _always), (_holding(96, 1.0), _always)], 64)
    assert _overlapped(small, big)  # 32 MiB first: under the bound, so the 96 MiB one ran beside it


def test_a_hanging_fork_is_killed_at_the_deadline_and_the_others_answer_kept() -> None:
    def hangs(first_batch_done):
        first_batch_done([np.ones(4)])
        time.sleep(60)
        return [np.ones(4)]

    started = time.perf_counter()
    stuck, fine = measure_in_forks([(hangs, _always), (_holding(8, 3.0), _always)], timeout_s=1.5)
    assert time.perf_counter() - started < 5
    assert stuck.peak_mb is not None and stuck.outputs is None  # the peak came; the answers never did
    assert fine.outputs is not None and float(fine.outputs[0][0]) == 3.0


def test_a_fork_that_fails_or_is_not_to_send_its_answers_leaves_them_to_the_worker(tmp_path: Path) -> None:
    def fails(first_batch_done):
        raise RuntimeError("the model crashed while loading")

    def objects(first_batch_done):
        first_batch_done([np.array([{"label": 1}], dtype=object)])  # an sklearn ZipMap's list of dicts
        (tmp_path / "objects").write_text("ran past the first batch")
        return []

    def large(first_batch_done):
        first_batch_done([np.ones(8)])
        (tmp_path / "large").write_text("ran past the first batch")
        return [np.ones(8)]

    assert measure_in_fork(fails, _always) == NOT_FORKED
    for run, send_if in ((objects, _always), (large, lambda first: False)):
        unsent = measure_in_fork(run, send_if)
        assert unsent.peak_mb is not None and unsent.outputs is None and unsent.problem is None
    assert list(tmp_path.iterdir()) == []  # neither fork ran the inputs it would not send


def test_a_fork_that_stops_after_its_first_batch_still_gives_the_peak(tmp_path: Path) -> None:
    """A later batch that kills the fork (or fails with the student's problem): the peak read after
    the first batch is kept, and the problem comes back to be reported without running again."""
    marker = tmp_path / "second-batch"

    def killed(first_batch_done):
        first_batch_done([np.ones(8)])
        marker.write_text("ran")
        os.kill(os.getpid(), signal.SIGKILL)

    def fails_later(first_batch_done):
        first_batch_done([np.ones(8)])
        raise fault(Problem(kind="run", message="model 'candidate' failed to run: batch 2", hint="Fix it."))

    forked = measure_in_fork(killed, _always)
    assert marker.read_text() == "ran" and forked.peak_mb is not None and forked.outputs is None
    failed = measure_in_fork(fails_later, _always)
    assert failed.peak_mb is not None and failed.outputs is None
    assert failed.problem == Problem(kind="run", message="model 'candidate' failed to run: batch 2", hint="Fix it.")


def _message(value) -> bytes:
    data = json.dumps(value).encode()
    return HEADER.pack(len(data)) + data


def test_a_truncated_or_malformed_answer_keeps_only_what_can_be_trusted() -> None:
    arrays = io.BytesIO()
    for array in (np.arange(6.0).reshape(3, 2), np.arange(3)):
        np.lib.format.write_array(arrays, array, allow_pickle=False)
    whole = _message({"peak_mb": 12.5}) + _message({"outputs": 2}) + arrays.getvalue()
    complete = parse_answer(whole)
    assert complete.peak_mb == 12.5 and [o.shape for o in complete.outputs] == [(3, 2), (3,)]
    assert parse_answer(whole[:-5]) == Forked(12.5)  # cut short: the peak, not half the outputs
    assert parse_answer(whole + b"x") == Forked(12.5)  # trailing bytes: not what was sent
    assert parse_answer(_message({"peak_mb": 12.5}) + _message({"outputs": True})) == Forked(12.5)
    assert parse_answer(_message({"peak_mb": 12.5}) + _message({"problem": {"kind": 3}})) == Forked(12.5)
    assert parse_answer(whole[:6]) == NOT_FORKED and parse_answer(b"") == NOT_FORKED
    assert parse_answer(_message({"peak_mb": "much"})) == NOT_FORKED
    assert parse_answer(_message(["peak_mb", 1])) == NOT_FORKED


def test_a_model_that_fails_on_a_later_batch_is_reported_as_without_the_fork(tmp_path: Path) -> None:
    """An honest bug: a Reshape hard-coded to batch 256 runs the first chunk and fails on the
    last, partial one. The fork sends that failure back, so the worker says exactly what it says
    when it runs every input itself, without running them twice."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Reshape", ["input", "shape"], ["output"])],
        "fixed-reshape",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [256, 4])],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [256, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "reshape.onnx"
    path.write_bytes(model.SerializeToString())
    arrays = {"input": np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)}

    def load_and_run(first_batch_done):
        return run_all(load_model(path, "onnx", threads=1), "candidate", arrays, 256, first_batch_done)

    forked = measure_in_fork(load_and_run, _always)
    assert forked.peak_mb is not None and forked.problem is not None and forked.outputs is None
    job = ModelJob(role="candidate", file={"folder": "submission", "path": "reshape.onnx"}, format="onnx")
    messages = []
    for given in (forked, NOT_FORKED):
        with pytest.raises(SubmissionError) as raised:
            observe_model(job, path, 1, arrays, 256, given)
        messages.append(raised.value.problem.message)
    assert messages[0] == messages[1] and "model 'candidate' failed to run" in messages[0]


def test_whatever_escapes_the_fork_ends_it_there(monkeypatch, tmp_path: Path) -> None:
    """A broken pipe at the child's last flush must end the child, never return into the worker's
    own code (a second worker writing observations)."""
    from grader.worker import memory

    def broken(*_args) -> None:
        raise BrokenPipeError("the parent went away")

    monkeypatch.setattr(memory, "_child", broken)
    parent = os.getpid()
    try:
        result = measure_in_fork(lambda first_batch_done: [], _always)
    finally:
        if os.getpid() != parent:  # the fork came back here: say so and leave, as a regression would
            (tmp_path / "escaped").write_text("the fork ran the caller's code")
            os._exit(0)
    assert result == NOT_FORKED and not (tmp_path / "escaped").exists()
