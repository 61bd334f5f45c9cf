"""Benchmark: grading the hw2 reference solution, repeated, on this machine.

Prints one table:
- wall time per grading (target <= 60 s on 2 cores),
- the spread of the measured speedup across the runs, (max - min) / median (target <= 10%),
- the grader's own overhead: its latency for the candidate (grader.worker.runtime + grader.worker.measure)
  against a bare onnxruntime loop over the same model, interleaved in one process (target <= 5%).

Run: .venv/bin/python benchmarks/grade_reference.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.commands.common import sandboxes  # noqa: E402
from grader.config.course import RunnerConfig  # noqa: E402
from grader.grading.pipeline import grade  # noqa: E402
from grader.worker.measure import ratio_estimate, time_interleaved  # noqa: E402
from grader.worker.runtime import load_model  # noqa: E402
from reference.build import ensure_built  # noqa: E402

SOLUTION = ROOT / "reference" / "solutions" / "hw2-quantization-pruning"


def grading_runs(runs: int) -> tuple[list[float], dict[str, list[float]]]:
    walls, speedups = [], {"b1": [], "b64": []}
    for i in range(runs):
        started = time.perf_counter()
        grading = grade(SOLUTION, sandboxes(RunnerConfig()))
        walls.append(time.perf_counter() - started)
        result = grading.result
        assert result.status == "graded", result.problems
        for batch in speedups:
            speedups[batch].append(result.metrics[f"candidate_vs_baseline.speedup_{batch}"].value)
        print(
            f"run {i + 1}/{runs}: {walls[-1]:.1f} s, score {result.score:g}/{result.max_score:g}, "
            f"speedup b64 {speedups['b64'][-1]:.2f}x",
            flush=True,
        )
    return walls, speedups


def overhead(batch: int, budget_s: float = 8.0) -> tuple[float, float, float]:
    """Median latency (ms) through the grader's runtime vs a bare onnxruntime session; ratio."""
    import onnxruntime as ort

    path = SOLUTION / "compressed.onnx"
    inputs = np.load(SOLUTION / "inputs.npz")["input"]
    feeds = {"input": inputs[np.arange(batch) % len(inputs)]}
    graded = load_model(path, "onnx", threads=1)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    bare = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    times = time_interleaved(lambda: bare.run(None, feeds), lambda: graded.run(feeds), budget_s=budget_s, warmup=5)
    ratio = ratio_estimate(times)
    return float(np.median(times.candidate_s)) * 1e3, float(np.median(times.reference_s)) * 1e3, 1 / ratio.value - 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ensure_built()
    walls, speedups = grading_runs(args.runs)
    rows = [("wall time per grading (median, max)", f"{statistics.median(walls):.1f} s, {max(walls):.1f} s", "<= 60 s")]
    for batch, values in speedups.items():
        med = statistics.median(values)
        spread = (max(values) - min(values)) / med
        rows.append((f"speedup {batch}: median [min-max]", f"{med:.2f}x [{min(values):.2f}-{max(values):.2f}]", ""))
        rows.append((f"speedup {batch}: spread (max-min)/median", f"{spread:.1%}", "<= 10%"))
    for batch in (1, 64):
        graded_ms, bare_ms, extra = overhead(batch)
        rows.append(
            (
                f"grader overhead at batch {batch} (grader {graded_ms:.3f} ms vs bare {bare_ms:.3f} ms)",
                f"{extra:+.1%}",
                "<= 5%",
            )
        )
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'measured':<28}  target")
    print("-" * (width + 40))
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<28}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
