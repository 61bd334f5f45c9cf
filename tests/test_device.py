"""Measuring on the device an assignment names (``measure.device``), as far as a machine without a
GPU can check it: the choice of device, the pending points and their wording, the environment
record, that a CPU-only machine never touches CUDA, and the publisher's rule for pending checks.
The real GPU checks are in ``tests/gpu/`` (skipped here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from grader.checks import CheckContext, evaluate, prepare
from grader.config.assignment import load_assignment
from grader.contracts.job import CudaSpec
from grader.contracts.observations import Environment, GpuFacts, GpuState
from grader.contracts.result import CheckStatus
from grader.errors import ConfigError, SubmissionError
from grader.grading.pipeline import warn_moving_clocks
from grader.report.render import device_summary, render_markdown
from grader.worker.device import plan_device
from grader.worker.gpu import clocks_moved, facts_from_smi, parse_smi_line
from grader.worker.measure import warm_up
from grader.worker.session import observe_model
from tests import builders
from tests.grading import grade

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "reference" / "solutions" / "hw2-quantization-pruning"
HW2 = "hw2-quantization-pruning"


def course(tmp_path: Path, device: str | None) -> Path:
    """A course repository: the shipped assignments (short timing) and a course.yaml naming ``device``."""
    root = builders.fast_assignments(tmp_path / "course" / "assignments")
    settings = {"schema": 1, **({"measure": {"device": device}} if device else {})}
    (tmp_path / "course" / "course.yaml").write_text(yaml.safe_dump(settings))
    return root


# --------------------------------------------------------------------------- choosing the device


def test_a_machine_without_an_nvidia_device_plans_the_cpu(tmp_path: Path) -> None:
    assert plan_device("cpu", {"onnx"}, CudaSpec(), tmp_path).kind == "cpu"
    wanted = plan_device("cuda", {"onnx"}, CudaSpec(), tmp_path)
    assert (wanted.kind, wanted.pending, wanted.reason) == ("cpu", True, "no CUDA device on this machine")
    auto = plan_device("auto", {"onnx", "pt2"}, CudaSpec(), tmp_path)
    assert (auto.kind, auto.pending) == ("cpu", False)  # auto measures where it can, nothing waits


def test_a_gpu_the_stack_cannot_use_says_which_part_is_missing(tmp_path: Path) -> None:
    (tmp_path / "nvidiactl").write_text("")  # a device node here, but this machine's wheels are CPU builds
    onnx_plan = plan_device("cuda", {"onnx"}, CudaSpec(), tmp_path)
    assert onnx_plan.pending and "no CUDAExecutionProvider" in onnx_plan.reason
    trt = plan_device("cuda", {"onnx"}, CudaSpec(onnx_provider="tensorrt"), tmp_path)
    assert "no TensorrtExecutionProvider" in trt.reason
    torch_plan = plan_device("cuda", {"pt2"}, CudaSpec(), tmp_path)
    assert torch_plan.pending and "cannot use the GPU" in torch_plan.reason


def test_the_course_default_applies_unless_the_assignment_names_a_device(tmp_path: Path) -> None:
    root = course(tmp_path, "cuda")
    hw2 = load_assignment(HW2, root)
    assert hw2.measure.device == "cuda"
    pending = {c.id for c in hw2.checks if c.may_be_pending}
    assert pending == {"speedup"}  # only the check that reads a timed figure may wait for the GPU
    config = yaml.safe_load((root / HW2 / "assignment.yaml").read_text())
    config["measure"]["device"] = "cpu"
    (root / HW2 / "assignment.yaml").write_text(yaml.safe_dump(config))
    assert load_assignment(HW2, root).measure.device == "cpu"
    assert not any(c.may_be_pending for c in load_assignment(HW2, root).checks)
    assert load_assignment(HW2, course(tmp_path / "plain", None)).measure.device == "cpu"


def test_a_broken_course_measure_section_is_staff_s_error(tmp_path: Path) -> None:
    root = course(tmp_path, None)
    (root.parent / "course.yaml").write_text("schema: 1\nmeasure: {device: tpu}\n")
    with pytest.raises(ConfigError, match="device"):
        load_assignment(HW2, root)


# --------------------------------------------------------------------------- a cuda grading without a GPU


def test_hw2_on_cuda_without_a_gpu_leaves_only_the_speed_pending(tmp_path: Path) -> None:
    result = grade(SOLUTION, course(tmp_path, "cuda")).result
    checks = {c.id: c for c in result.checks}
    assert checks["speedup"].pending and checks["speedup"].points == 0
    assert "measured only on the course's GPU runner" in checks["speedup"].message
    assert "no CUDA device on this machine" in checks["speedup"].message
    assert all(c.status.value == "pass" for i, c in checks.items() if i != "speedup")
    assert (result.score, result.max_score, result.pending_points) == (90, 90, 10)
    assert result.metrics["candidate_vs_baseline.speedup_b16"].pending
    assert result.metrics["candidate.latency_ms_b16"].pending
    assert result.metrics["candidate.gpu_peak_mb"].pending  # GPU memory waits too, CPU memory does not
    assert result.metrics["candidate.peak_rss_mb"].value is not None
    assert result.environment.device_pending and result.environment.gpu_facts is None
    comment = render_markdown(result)
    assert "speeds, latencies and GPU memory come only from the course's GPU runner" in comment
    assert "pending (GPU runner)" in comment  # the figures' own cells say so too


def test_hw2_on_auto_without_a_gpu_is_graded_on_the_cpu_in_full(tmp_path: Path) -> None:
    result = grade(SOLUTION, course(tmp_path, "auto")).result
    speedup = next(c for c in result.checks if c.id == "speedup")
    assert not speedup.pending and speedup.status.value == "pass"
    assert (
        result.pending_points == 0
        and result.environment.device == "cpu (auto asked for: no CUDA device on this machine)"
    )


CUDA_PROBE = """
import json, sys
from pathlib import Path
from grader.contracts.job import Job
from grader.worker.session import observe
job = Job.model_validate_json(Path(sys.argv[1]).read_text())
obs = observe(job, {"submission": Path(sys.argv[2])})
import torch
print(json.dumps({"cuda_initialized": torch.cuda.is_initialized(), "device": obs.environment.device,
                  "timing": [t.speedup.pending for t in obs.timing], "failure": str(obs.failure)}))
"""


def test_a_cpu_only_machine_never_initialises_cuda(tmp_path: Path) -> None:
    """A torch and an ONNX model graded for ``device: cuda`` in a fresh interpreter: torch's CUDA is
    never initialised, nothing is timed (CPU times would stand for GPU ones), every timing waits."""
    model = builders.trained_tiny(epochs=1)
    builders.export(model, tmp_path / "model.onnx")
    builders.torch_source(model, tmp_path / "model.pt2")
    builders.write_inputs(tmp_path / "inputs.npz")
    job = {
        "models": [
            {"role": "source", "file": {"folder": "submission", "path": "model.pt2"}, "format": "pt2"},
            {"role": "onnx", "file": {"folder": "submission", "path": "model.onnx"}, "format": "onnx"},
        ],
        "inputs": {"folder": "submission", "path": "inputs.npz"},
        "measure": {"device": "cuda", "compare": [{"reference": "source", "candidate": "onnx"}]},
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    done = subprocess.run(
        [sys.executable, "-c", CUDA_PROBE, str(tmp_path / "job.json"), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
        check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["failure"] == "None"
    assert seen["cuda_initialized"] is False
    assert seen["timing"] == [True, True]  # batch 1 and 64, both pending
    assert seen["device"].startswith("cpu (cuda asked for")


# --------------------------------------------------------------------------- the publisher's rule


def test_only_gpu_measured_checks_of_a_cuda_assignment_may_be_pending(tmp_path: Path) -> None:
    from grader.ci.artifact import ArtifactRejected, check_adds_up

    cuda_result = grade(SOLUTION, course(tmp_path / "a", "cuda")).result
    check_adds_up(cuda_result, load_assignment(HW2, course(tmp_path / "b", "cuda")))  # accepted
    with pytest.raises(ArtifactRejected, match="speedup"):
        check_adds_up(cuda_result, load_assignment(HW2, course(tmp_path / "c", "cpu")))
    skipped = {"pending": True, "points": 0.0, "status": CheckStatus.SKIPPED}
    checks = [c.model_copy(update=skipped) if c.id == "fidelity" else c for c in cuda_result.checks]
    forged = cuda_result.model_copy(
        update={"checks": checks, "score": cuda_result.score - 20, "max_score": 70, "pending_points": 30}
    )
    with pytest.raises(ArtifactRejected, match="fidelity"):
        check_adds_up(forged, load_assignment(HW2, course(tmp_path / "d", "cuda")))


# --------------------------------------------------------------------------- the environment record

SMI_LINE = "NVIDIA H200, GPU-0b1c, 580.65.06, 143771, Enabled, 1980, 1980, 2619, 31, 118.52, 0x0000000000000000"


def test_nvidia_smi_facts_are_recorded_as_a_scientist_would() -> None:
    facts = facts_from_smi(parse_smi_line(SMI_LINE))
    assert (facts.name, facts.driver, facts.memory_mb, facts.persistence_mode) == (
        "NVIDIA H200",
        "580.65.06",
        143771,
        "Enabled",
    )
    assert facts.start == GpuState(
        sm_clock_mhz=1980,
        memory_clock_mhz=2619,
        temperature_c=31,
        power_w=118.52,
        throttle_reasons="0x0000000000000000",
    )
    blank = facts_from_smi(parse_smi_line("NVIDIA H200, GPU-0b1c, 580.65.06, [N/A], [N/A], [N/A], [N/A], , , , "))
    assert blank.memory_mb is None and blank.start.sm_clock_mhz is None


def test_moving_clocks_are_named_and_warned_about_on_timing_checks_only(tmp_path: Path) -> None:
    facts = GpuFacts(name="NVIDIA H200", start=GpuState(sm_clock_mhz=1980, memory_clock_mhz=2619))
    facts.end = GpuState(sm_clock_mhz=1410, memory_clock_mhz=2619)
    assert clocks_moved(facts, 0.05) == "SM clock 1980 -> 1410 MHz"
    steady = facts.model_copy(update={"end": GpuState(sm_clock_mhz=1965, memory_clock_mhz=2619)})
    assert clocks_moved(steady, 0.05) == ""
    facts.clocks_moved = clocks_moved(facts, 0.05)
    env = Environment(device="cuda:0 (NVIDIA H200)", gpu_facts=facts)
    hw2 = load_assignment(HW2, course(tmp_path, "cuda"))
    checks = prepare(hw2)
    result = grade(SOLUTION, course(tmp_path / "cpu", "cpu")).result
    warned = {r.id: r.message for r in warn_moving_clocks(result.checks, checks, env)}
    assert "SM clock 1980 -> 1410 MHz" in warned["speedup"]
    assert all("clocks moved" not in m for i, m in warned.items() if i != "speedup")
    line = device_summary(env)
    assert line.startswith("cuda:0 (NVIDIA H200): NVIDIA H200") and "end: SM 1410 MHz" in line


# --------------------------------------------------------------------------- the measurement loop


def test_gpu_warm_up_runs_until_round_times_are_steady() -> None:
    """Clocks ramping for 12 rounds (10 s down to 4.5 s), then steady at 4 s: warm-up ends at the
    first round whose last 8 times and the 8 before both have a median of 4 s (round 25)."""
    ramp = [10 - 0.5 * i for i in range(12)] + [4.0] * 100
    assert warm_up(lambda n: ramp[n], 3, 0.0, 0.0) == 3  # the CPU path: the fixed count only
    assert warm_up(lambda n: ramp[n], 0, 1e-6, 60.0) == 25
    never = warm_up(lambda n: float(n % 7 + 1) * (1 + n), 1, 0.01, 0.05)  # never steady: the time cap ends it
    assert never >= 1


# --------------------------------------------------------------------------- what a model needs


def bf16_matmul(path: Path) -> Path:
    """A bfloat16 MatMul: valid ONNX that ONNX Runtime implements on CUDA, not on the CPU."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"])],
        "bf16",
        [helper.make_tensor_value_info("input", TensorProto.BFLOAT16, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.BFLOAT16, ["batch", 10])],
        [helper.make_tensor("w", TensorProto.BFLOAT16, [64, 10], np.zeros(640, np.uint16).tobytes(), raw=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_a_gpu_only_model_on_a_cpu_grading_is_told_why(tmp_path: Path) -> None:
    from grader.contracts.job import ModelJob

    path = bf16_matmul(tmp_path / "bf16.onnx")
    job = ModelJob(role="candidate", file={"folder": "submission", "path": "bf16.onnx"}, format="onnx")
    arrays = {"input": np.zeros((4, 64), np.float32)}
    with pytest.raises(SubmissionError) as caught:
        observe_model(job, path, 1, arrays, 4)
    assert "Could not find an implementation" in caught.value.problem.message
    assert "seems to need a GPU" in caught.value.problem.hint


def test_half_precision_counts_only_where_the_assignment_says_so(tmp_path: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from grader.grading.figures import model_figures
    from grader.intake.manifest import Submission

    model = builders.trained_tiny(epochs=1)
    fp32 = builders.export(model, tmp_path / "fp32.onnx")
    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), tmp_path / "fp16.onnx")
    arrays = {"input": np.load(builders.write_inputs(tmp_path / "inputs.npz"))["input"]}
    from grader.contracts.job import ModelJob
    from grader.contracts.observations import Observations

    obs = Observations()
    for role, name in (("baseline", "fp32.onnx"), ("candidate", "fp16.onnx")):
        job = ModelJob(role=role, file={"folder": "submission", "path": name}, format="onnx")
        obs.models[role] = observe_model(job, tmp_path / name, 1, arrays, 64)[0]
    hw2 = load_assignment(HW2)
    figures = model_figures(obs, {})

    def quantized(params: dict, claim: str) -> tuple[float, str]:
        spec = next(c for c in hw2.checks if c.id == "quantized").model_copy(
            update={"params": {**next(c for c in hw2.checks if c.id == "quantized").params, **params}}
        )
        one = hw2.model_copy(update={"checks": [spec]})
        sub = Submission(schema=1, team="t", assignment=HW2, members=["octocat"], claims={"quantization": claim})
        [result] = evaluate(prepare(one), CheckContext(one, sub, obs, figures.values, figures.summaries))
        return result.points, result.message

    points, message = quantized({}, "fp16")
    assert points == 0 and "half-precision weights are not integer quantization" in message
    points, message = quantized({}, "int8")
    assert points == 0 and "0.0% of weight values are stored as integers" in message
    points, message = quantized({"half_precision": True}, "fp16")
    assert points == 25 and "or 16-bit floats" in message


def int16_relu(path: Path) -> Path:
    """An int16 Relu: valid ONNX with no CPU kernel in onnxruntime, and nothing to do with a GPU."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["logits"])],
        "int16",
        [helper.make_tensor_value_info("input", TensorProto.INT16, ["batch", 10])],
        [helper.make_tensor_value_info("logits", TensorProto.INT16, ["batch", 10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_a_missing_cpu_kernel_without_16_bit_floats_keeps_the_usual_hint(tmp_path: Path) -> None:
    from grader.contracts.job import ModelJob

    path = int16_relu(tmp_path / "int16.onnx")
    job = ModelJob(role="candidate", file={"folder": "submission", "path": "int16.onnx"}, format="onnx")
    with pytest.raises(SubmissionError) as caught:
        observe_model(job, path, 1, {"input": np.zeros((4, 10), np.int16)}, 4)
    assert "Could not find an implementation" in caught.value.problem.message
    assert "GPU" not in caught.value.problem.hint and "loads on your machine" in caught.value.problem.hint


def test_a_worker_that_claims_no_gpu_when_it_was_given_one_is_not_believed() -> None:
    from grader.contracts.observations import Estimate, Observations, TimingComparison
    from grader.errors import WorkerError
    from grader.grading.figures import model_figures
    from grader.sandbox.base import parse_observations

    claim = Observations(environment=Environment(device_pending=True, device_reason="no CUDA device on this machine"))
    data = claim.model_dump_json().encode()
    assert parse_observations(data, 0, "", "bubblewrap").environment.device_pending  # no GPU given: believed
    with pytest.raises(WorkerError, match="no usable GPU although the sandbox passed it one"):
        parse_observations(data, 0, "", "bubblewrap; GPU 0 passed through", gpu_passed=True)
    # a "pending" figure from a worker that did not say it lacked the GPU, or one with a value, is judged as it is
    timing = TimingComparison(
        reference="baseline",
        candidate="candidate",
        batch_size=16,
        threads=1,
        rounds=0,
        reference_ms=None,
        candidate_ms=None,
        speedup=Estimate(value=None, unit="x", pending=True),
        reference_items_per_s=None,
        candidate_items_per_s=None,
    )
    lying = Observations(timing=[timing])
    assert not model_figures(lying, {}).values["candidate_vs_baseline.speedup_b16"].pending
    with_value = timing.model_copy(update={"speedup": Estimate(value=0.5, unit="x", pending=True)})
    honest = Observations(timing=[with_value], environment=Environment(device_pending=True))
    assert not model_figures(honest, {}).values["candidate_vs_baseline.speedup_b16"].pending


def test_an_engine_that_does_not_match_fails_even_while_its_speed_partner_is_unavailable(tmp_path: Path) -> None:
    from grader.contracts.observations import DerivedStatus, FidelityComparison, Observations, OutputParity
    from grader.grading.figures import model_figures
    from grader.intake.manifest import Submission

    hw6 = load_assignment("hw6-export")
    mismatch = FidelityComparison(
        reference="source",
        candidate="tensorrt",
        samples=8,
        top1_agreement=0.5,
        snr_db=5.0,
        max_abs_error=3.0,
        outputs=[
            OutputParity(name="logits", shape=[8, 10], max_abs_error=3.0, max_rel_error=2.0, tolerance_ratio=3000)
        ],
    )
    obs = Observations(
        fidelity=[mismatch],
        derived=[
            DerivedStatus(
                role="onnx_cuda", source="onnx", runtime="onnxruntime-cuda", status="unavailable", reason="x"
            ),
            DerivedStatus(role="tensorrt", source="onnx", runtime="tensorrt", status="built", version="11", build_s=1),
        ],
    )
    figures = model_figures(obs, {})
    one = hw6.model_copy(update={"checks": [c for c in hw6.checks if c.id == "tensorrt"]})
    sub = Submission(schema=1, team="t", assignment="hw6-export", members=["octocat"], claims={"tensorrt": True})
    [result] = evaluate(prepare(one), CheckContext(one, sub, obs, figures.values, figures.summaries))
    assert not result.pending and result.points == 0
    matching = mismatch.model_copy(
        update={
            "outputs": [
                OutputParity(name="logits", shape=[8, 10], max_abs_error=0, max_rel_error=0, tolerance_ratio=0)
            ],
            "top1_agreement": 1.0,
            "snr_db": 90.0,
            "max_abs_error": 0.0,
        }
    )
    obs = obs.model_copy(update={"fidelity": [matching]})
    [result] = evaluate(prepare(one), CheckContext(one, sub, obs, model_figures(obs, {}).values, {}))
    assert result.pending and "Pending: x" in result.message
