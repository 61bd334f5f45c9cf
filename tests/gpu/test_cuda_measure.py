"""The real GPU checks of measuring on CUDA: skipped on a machine without one (as on the project's
CI), run by ``benchmarks/gpu.sh`` on a CUDA machine. Each model is built here, small enough to
export in a second, large enough that the GPU's work dwarfs a Python call.

What they hold: an fp16 model times faster than its fp32 original on the GPU with a tight
interval; the grader's device-resident timing is within a few percent of a bare CUDA-event loop;
peak GPU memory of a known allocation reads as that allocation; ONNX Runtime's CUDA provider and
hw6's TensorRT check run where their packages are installed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip(
        "no CUDA device: these checks run on the course's GPU runner (benchmarks/gpu.sh)", allow_module_level=True
    )

from torch import nn  # noqa: E402

from grader.contracts.job import Job  # noqa: E402
from grader.worker.runtime import load_model  # noqa: E402
from grader.worker.session import observe  # noqa: E402

WIDTH = 4096
BATCH = 256


class Wide(nn.Module):
    """Three wide layers: about 2 x 4096^2 MACs per sample, where fp16 tensor cores pay off."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(1024, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def export(model: nn.Module, path: Path, dtype: torch.dtype) -> Path:
    model = model.to(dtype).eval()
    example = (torch.zeros(4, 1024, dtype=dtype),)
    program = torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gpu")
    torch.manual_seed(0)
    model = Wide()
    export(copy.deepcopy(model), folder / "fp32.pt2", torch.float32)
    export(copy.deepcopy(model), folder / "fp16.pt2", torch.float16)  # the same weights, halved
    inputs = np.random.default_rng(0).normal(size=(512, 1024)).astype(np.float32)
    np.savez(folder / "inputs.npz", input=inputs)
    # a known allocation: an 8192 x 8192 fp32 weight is 256 MiB
    known = torch.export.export(nn.Linear(8192, 8192, bias=False).eval(), (torch.zeros(2, 8192),))
    torch.export.save(known, str(folder / "known.pt2"))
    np.savez(folder / "wide_inputs.npz", input=np.zeros((4, 8192), np.float32))
    return folder


def job(models: dict[str, str], inputs: str = "inputs.npz", **measure: object) -> Job:
    return Job.model_validate(
        {
            "models": [
                {"role": role, "file": {"folder": "submission", "path": name}, "format": "pt2"}
                for role, name in models.items()
            ],
            "inputs": {"folder": "submission", "path": inputs},
            "measure": {"device": "cuda", **measure},
        }
    )


def test_fp16_is_measured_faster_than_fp32_on_the_gpu_with_a_tight_interval(files: Path) -> None:
    spec = job(
        {"baseline": "fp32.pt2", "candidate": "fp16.pt2"},
        compare=[{"reference": "baseline", "candidate": "candidate", "atol": 0.05, "rtol": 0.05}],
        timing={"batch_sizes": [BATCH], "budget_s": 20, "rel_width": 0.03},
    )
    obs = observe(spec, {"submission": files})
    assert obs.failure is None, obs.failure
    [timing] = obs.timing
    assert timing.device == "cuda" and obs.environment.device.startswith("cuda:0")
    speedup = timing.speedup
    assert speedup.low > 1.3, speedup  # tensor cores: far more than noise
    assert (speedup.high - speedup.low) / speedup.value < 0.05, speedup
    assert timing.reference_transfer_ms is not None and timing.candidate_transfer_ms is not None
    assert all(t.consistent for t in timing.timed_outputs)
    assert obs.models["baseline"].gpu_peak_mb > 0
    print(json.dumps({"fp16_speedup": speedup.model_dump(), "rounds": timing.rounds, "stopped": timing.stopped}))


def bare_event_loop_ms(module: nn.Module, x: torch.Tensor, calls: int = 200) -> float:
    """The reference: CUDA events around each call, nothing else, median over ``calls``."""
    times = []
    with torch.inference_mode():
        for _ in range(50):
            module(x)
        torch.cuda.synchronize()
        for _ in range(calls):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            module(x)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return float(np.median(times))


def test_device_resident_timing_is_within_a_few_percent_of_a_bare_event_loop(files: Path) -> None:
    from grader.worker.device import plan_device
    from grader.worker.measure import time_single

    plan = plan_device("cuda", {"pt2"}, job({}).measure.cuda)
    model = load_model(files / "fp32.pt2", "pt2", 1, device=plan)
    feeds = {"x": np.random.default_rng(1).normal(size=(BATCH, 1024)).astype(np.float32)}
    name = model.input_names[0]
    staged = model.stage({name: feeds["x"]})
    seconds, _ = time_single(staged.call, budget_s=5, warmup=50, min_rounds=200, max_rounds=200, warmup_s=1.0)
    grader_ms = float(np.median(seconds)) * 1e3
    module = torch.export.load(str(files / "fp32.pt2"))
    from torch.export.passes import move_to_device_pass

    bare = move_to_device_pass(module, "cuda").module()
    bare_ms = bare_event_loop_ms(bare, torch.from_numpy(feeds["x"]).cuda())
    print(json.dumps({"grader_ms": grader_ms, "bare_event_ms": bare_ms}))
    assert abs(grader_ms / bare_ms - 1) < 0.05


def test_peak_gpu_memory_of_a_known_allocation(files: Path) -> None:
    obs = observe(job({"known": "known.pt2"}, "wide_inputs.npz"), {"submission": files})
    assert obs.failure is None, obs.failure
    peak = obs.models["known"].gpu_peak_mb
    assert 256 <= peak <= 256 + 64, peak  # the 8192 x 8192 fp32 weight, plus small activations
    assert obs.models["known"].gpu_memory_note == "torch.cuda.max_memory_allocated"


def test_the_environment_names_the_gpu_and_its_clocks(files: Path) -> None:
    obs = observe(job({"known": "known.pt2"}, "wide_inputs.npz"), {"submission": files})
    facts = obs.environment.gpu_facts
    if facts is None:
        pytest.skip("neither NVML nor nvidia-smi answers on this machine")
    assert facts.name and facts.driver and facts.start is not None and facts.end is not None
    assert obs.environment.libraries.get("torch cuda")


def test_onnx_runtime_cuda_provider_times_device_resident(files: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed here")
    model = Wide().eval()
    torch.onnx.export(
        model,
        (torch.zeros(2, 1024),),
        tmp_path / "wide.onnx",
        dynamo=False,
        input_names=["input"],
        dynamic_axes={"input": {0: "batch"}},
    )
    np.savez(tmp_path / "inputs.npz", input=np.random.default_rng(0).normal(size=(256, 1024)).astype(np.float32))
    spec = Job.model_validate(
        {
            "models": [{"role": "m", "file": {"folder": "submission", "path": "wide.onnx"}, "format": "onnx"}],
            "inputs": {"folder": "submission", "path": "inputs.npz"},
            "measure": {"device": "cuda", "solo": ["m"], "timing": {"batch_sizes": [64], "budget_s": 5}},
        }
    )
    obs = observe(spec, {"submission": tmp_path})
    assert obs.failure is None, obs.failure
    [solo] = obs.solo_timing
    assert solo.device == "cuda" and solo.transfer_ms is not None and solo.latency_ms.value > 0


def test_hw6_tensorrt_check_on_its_reference(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt_bindings" if not _has("tensorrt") else "tensorrt")
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("hw6 times the engine against ONNX Runtime's CUDA provider: onnxruntime-gpu is not installed")
    from tests.grading import grade

    root = Path(__file__).resolve().parents[2]
    result = grade(root / "reference" / "solutions" / "hw6-export").result
    check = next(c for c in result.checks if c.id == "tensorrt")
    assert not check.pending and check.status.value == "pass", check.message


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
