"""Benchmark: measuring on the GPU (issue #16), one page, in one run on one CUDA machine.

Prints one table:
- the grader's timing loop (device-resident inputs, ``synchronize()`` after every call, the
  interleaved rounds' bookkeeping) against a bare CUDA-event loop around the same model, for two
  model sizes: the overhead, target <= 2%;
- an fp16 model against its fp32 original, timed interleaved by the worker as a grading times it,
  in ``--gradings`` gradings: the median speedup and its spread (max - min) / median, target <= 3%;
- peak GPU memory of a known allocation (a 256 MiB weight), as the worker records it.

Needs torch with CUDA, numpy and pydantic (the worker's only imports); onnxruntime is not needed.
Run: python benchmarks/gpu.py [--gradings 5]  (benchmarks/gpu.sh runs it after tests/gpu)
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {"small (1024 wide)": 1024, "large (4096 wide)": 4096}
BATCH = 256


def wide(width: int):  # noqa: ANN201 - a torch module; torch is imported late, on purpose
    from torch import nn

    return nn.Sequential(nn.Linear(1024, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


def export(module, path: Path, dtype) -> Path:  # noqa: ANN001
    import torch

    module = copy.deepcopy(module).to(dtype).eval()
    example = (torch.zeros(4, 1024, dtype=dtype),)
    program = torch.export.export(module, example, dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return path


def bare_ms(path: Path, x: np.ndarray, calls: int) -> float:
    """CUDA events around each call of the exported program, nothing else."""
    import torch
    from torch.export.passes import move_to_device_pass

    module = move_to_device_pass(torch.export.load(str(path)), "cuda").module()
    inputs = torch.from_numpy(x).cuda()
    times = []
    with torch.inference_mode():
        for _ in range(50):
            module(inputs)
        torch.cuda.synchronize()
        for _ in range(calls):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            module(inputs)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return float(np.median(times))


def grader_ms(path: Path, x: np.ndarray, calls: int) -> float:
    """The worker's loop: a staged, device-resident call timed by ``time_single`` with GPU warm-up."""
    from grader.contracts.job import CudaSpec
    from grader.worker.device import plan_device
    from grader.worker.measure import time_single
    from grader.worker.runtime import load_model

    model = load_model(path, "pt2", 1, device=plan_device("cuda", {"pt2"}, CudaSpec()))
    staged = model.stage({model.input_names[0]: x})
    seconds, _ = time_single(
        staged.call, budget_s=60, warmup=50, min_rounds=calls, max_rounds=calls, warmup_s=1.0, max_warmup_s=5.0
    )
    return float(np.median(seconds)) * 1e3


def fp16_gradings(folder: Path, gradings: int) -> list[float]:
    """The fp16 model against the fp32 one, timed as a grading times them (fresh worker state each)."""
    from grader.contracts.job import Job
    from grader.worker.session import observe

    job = Job.model_validate(
        {
            "models": [
                {"role": "baseline", "file": {"folder": "submission", "path": "fp32_4096.pt2"}, "format": "pt2"},
                {"role": "candidate", "file": {"folder": "submission", "path": "fp16_4096.pt2"}, "format": "pt2"},
            ],
            "inputs": {"folder": "submission", "path": "inputs.npz"},
            "measure": {
                "device": "cuda",
                "compare": [{"reference": "baseline", "candidate": "candidate", "atol": 0.1, "rtol": 0.1}],
                "timing": {"batch_sizes": [BATCH], "budget_s": 15, "rel_width": 0.02},
            },
        }
    )
    speedups = []
    for _ in range(gradings):
        obs = observe(job, {"submission": folder})
        if obs.failure is not None:
            raise SystemExit(f"grading failed: {obs.failure.message}")
        speedups.append(float(obs.timing[0].speedup.value))
    return speedups


def known_peak(folder: Path) -> float | None:
    import torch
    from torch import nn

    from grader.contracts.job import Job
    from grader.worker.session import observe

    program = torch.export.export(nn.Linear(8192, 8192, bias=False).eval(), (torch.zeros(2, 8192),))
    torch.export.save(program, str(folder / "known.pt2"))
    np.savez(folder / "known.npz", input=np.zeros((4, 8192), np.float32))
    job = Job.model_validate(
        {
            "models": [{"role": "known", "file": {"folder": "submission", "path": "known.pt2"}, "format": "pt2"}],
            "inputs": {"folder": "submission", "path": "known.npz"},
            "measure": {"device": "cuda"},
        }
    )
    return observe(job, {"submission": folder}).models["known"].gpu_peak_mb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gradings", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to benchmark (this runs on the course's GPU runner)")
        return 2
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        x = np.random.default_rng(0).normal(size=(BATCH, 1024)).astype(np.float32)
        np.savez(folder / "inputs.npz", input=np.random.default_rng(1).normal(size=(512, 1024)).astype(np.float32))
        for label, width in SIZES.items():
            torch.manual_seed(0)
            module = wide(width)
            fp32 = export(module, folder / f"fp32_{width}.pt2", torch.float32)
            export(module, folder / f"fp16_{width}.pt2", torch.float16)
            bare, ours = bare_ms(fp32, x, args.calls), grader_ms(fp32, x, args.calls)
            rows.append(
                (
                    f"timing overhead, {label}, batch {BATCH}",
                    f"{ours:.3f} vs {bare:.3f} ms: {ours / bare - 1:+.1%}",
                    "<= 2%",
                )
            )
        speedups = fp16_gradings(folder, args.gradings)
        median = float(np.median(speedups))
        spread = (max(speedups) - min(speedups)) / median
        rows.append(
            (
                f"fp16 vs fp32 speedup over {args.gradings} gradings",
                f"median {median:.2f}x, spread {spread:.1%}",
                "<= 3%",
            )
        )
        peak = known_peak(folder)
        rows.append(
            (
                "peak GPU memory of a 256 MiB weight",
                f"{peak:.1f} MiB" if peak is not None else "not measured",
                "256 MiB + activations",
            )
        )
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    width = max(len(r[0]) for r in rows)
    print(f"| {'figure'.ljust(width)} | measured | target |")
    print(f"| {'-' * width} | --- | --- |")
    for figure, measured, target in rows:
        print(f"| {figure.ljust(width)} | {measured} | {target} |")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
