"""Benchmark: verdict-driven timing (issue #18), measured in one run on this machine.

Prints one table:
- the machine's own noise: one bare onnxruntime call at batch 64, how much it varies, and the
  rounds that variation costs a precise ratio;
- the hw2 reference solution, one grading: median wall time over ``--runs`` gradings;
- the spread of its speedup over those gradings, (max - min) / median, at batch 64 and batch 1;
- a speedup placed 2% above the full-marks threshold (the threshold moved to the measured
  median / 1.02): how many of ``--reruns`` gradings give the modal verdict;
- consistency of a real pair: the hw2 reference (int8 against fp32) graded ``--consistency``
  times, one after another; how much its figure varies (sd of the log figure) and the spread of
  each ``--runs`` of them in a row (what the spread row above is one draw of); how many of its
  95% intervals cover the median over all of them, and
  how much the figures vary between gradings beyond what each grading's own rounds explain (the
  session noise that hw2's ``session_noise`` must cover);
- A/A coverage: the same fp32 model as baseline and candidate, graded ``--aa`` times in parallel
  pinned gradings (one per core): how often each 95% interval covers 1.0;
- how those A/A gradings stopped timing (the ratio sits on hw2's zero-points threshold, so the
  session noise keeps its verdict open), and the points they got;
- throughput: the wall time of those ``--aa`` gradings, scaled to 100 submissions.

Run: .venv/bin/python benchmarks/timing.py [--runs 5] [--reruns 10] [--consistency 20] [--aa 100]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HW2 = "hw2-quantization-pruning"
SOLUTION = ROOT / "reference" / "solutions" / HW2
FIGURES = {"b64": "candidate_vs_baseline.speedup_b64", "b1": "candidate_vs_baseline.speedup_b1"}


def grade_once(folder: str, root: str | None = None) -> dict:
    """One grading with the defaults ``grader check`` uses; its wall time, speedups and verdict."""
    from grader.commands.common import sandboxes
    from grader.config.course import RunnerConfig
    from grader.grading.pipeline import grade

    started = time.perf_counter()
    result = grade(Path(folder), sandboxes(RunnerConfig()), Path(root) if root else None).result
    wall = time.perf_counter() - started
    assert result.status == "graded", result.problems
    speedup = next(c for c in result.checks if c.id == "speedup")
    figures = {name: result.metrics[key] for name, key in FIGURES.items()}
    return {
        "wall": wall,
        "points": speedup.points,
        **{name: (e.value, e.low, e.high, e.note) for name, e in figures.items()},
    }


def stop_of(note: str) -> str:
    """Why a figure's timing stopped, from its note (the words ``stop_note`` begins it with):
    settled, open (the session noise keeps the verdict open, and this run's part of the interval
    was narrow) or cap."""
    from grader.worker import timing

    settled = getattr(timing, "STOPPED_SETTLED", "stopped once settled")
    opened = getattr(timing, "STOPPED_OPEN", "stopped open")  # versions before the open stop have none
    return "settled" if settled in note else "open" if opened in note else "cap"


def machine_noise(calls: int = 60) -> tuple[float, float]:
    """How much the machine itself makes one call vary: the hw2 baseline alone in bare onnxruntime
    (one thread, the same batch of 64 every call), no grader at all. Returns the standard deviation
    of log call time, and the rounds an interleaved ratio of two models that vary as much then
    needs for a within-run 95% interval 6% wide: a pair-round's log ratio (two rounds' ratios of
    two calls each, averaged) varies by that same sd, and 8 batch means' half-width is
    2.365 sd / sqrt(pair-rounds) (a lower bound: the int8 candidate varied more than this)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(SOLUTION / "baseline.onnx"), options, providers=["CPUExecutionProvider"])
    with np.load(SOLUTION / "inputs.npz") as archive:
        feeds = {session.get_inputs()[0].name: archive["input"][:64].astype(np.float32)}
    for _ in range(5):
        session.run(None, feeds)
    seconds = []
    for _ in range(calls):
        started = time.perf_counter()
        session.run(None, feeds)
        seconds.append(time.perf_counter() - started)
    from grader.worker.measure import BATCHES, T_975

    sd = float(np.std(np.log(seconds)))
    return sd, 2 * (T_975[BATCHES - 1] * sd / 0.03) ** 2


def consistency(runs: list[dict], name: str) -> tuple[float, float]:
    """Of a real pair's gradings: the share of 95% intervals that cover the median figure, and the
    session noise they show: the sd of log figures between gradings, less the part each grading's
    own rounds explain (its within-run standard error: the interval's half-width, less the session
    noise's part 1.96 x log(1 + session_noise) in quadrature, over the t quantile of its batch
    means, ``T_975[BATCHES - 1]``)."""
    import math

    from grader.worker.measure import BATCHES, T_975

    logs = [math.log(r[name][0]) for r in runs]
    centre = statistics.median(logs)
    covered = sum(1 for r in runs if r[name][1] <= math.exp(centre) <= r[name][2]) / len(runs)
    try:
        from grader.contracts.job import session_half
    except ImportError:  # versions before it (this script also measures them): the same formula
        session_half = lambda noise: 1.96 * math.log1p(noise)  # noqa: E731

    noise_half = session_half(hw2_session_noise())
    own = []
    for r in runs:
        half = (math.log(r[name][2]) - math.log(r[name][1])) / 2
        own.append(max(0.0, half**2 - noise_half**2) / T_975[BATCHES - 1] ** 2)
    excess = statistics.variance(logs) - statistics.fmean(own)
    return covered, math.sqrt(max(0.0, excess))


@functools.cache
def hw2_session_noise() -> float:
    config = yaml.safe_load((ROOT / "assignments" / HW2 / "assignment.yaml").read_text())
    return float(config["measure"]["timing"].get("session_noise", 0.0))


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def pool(workers: int) -> ProcessPoolExecutor:
    try:
        from grader.gradebook.regrade import pinned_pool
    except ImportError:  # before issue #18: an unpinned pool
        import multiprocessing

        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    return pinned_pool(workers)


def near_threshold_root(work: Path, median_b64: float) -> Path:
    root = work / "assignments"
    shutil.copytree(ROOT / "assignments", root)
    path = root / HW2 / "assignment.yaml"
    config = yaml.safe_load(path.read_text())
    check = next(c for c in config["checks"] if c["id"] == "speedup")
    check["params"].update({"full": round(median_b64 / 1.02, 4), "zero": 1.0})
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def aa_folder(work: Path) -> Path:
    folder = work / "aa"
    shutil.copytree(SOLUTION, folder)
    shutil.copy(SOLUTION / "baseline.onnx", folder / "compressed.onnx")
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--reruns", type=int, default=10)
    parser.add_argument("--consistency", type=int, default=20)
    parser.add_argument("--aa", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    from reference.build import ensure_built

    ensure_built(quiet=True)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="timing-bench-") as tmp:
        work = Path(tmp)
        noise, rounds = machine_noise()
        rows.append(
            (
                "this machine: bare onnxruntime, one call at batch 64, sd of log time",
                f"{noise:.1%} (a 6%-wide ratio then takes about {rounds:.0f} rounds)",
            )
        )
        runs = [grade_once(str(SOLUTION)) for _ in range(args.runs)]
        for i, run in enumerate(runs):
            print(f"run {i + 1}: {run['wall']:.1f} s, b64 {run['b64'][0]:.2f}x ({run['b64'][3]})", flush=True)
        rows.append(
            ("hw2 reference, one grading, median wall time", f"{statistics.median(r['wall'] for r in runs):.1f} s")
        )
        rows.append(
            (
                f"speedup spread over {args.runs} gradings, batch 64 / batch 1",
                f"{spread([r['b64'][0] for r in runs]):.1%} / {spread([r['b1'][0] for r in runs]):.1%}",
            )
        )
        median_b64 = statistics.median(r["b64"][0] for r in runs)
        root = near_threshold_root(work, median_b64)
        verdicts = [grade_once(str(SOLUTION), str(root))["points"] for _ in range(args.reruns)]
        modal = max(set(verdicts), key=verdicts.count)
        print(f"near threshold (full at {median_b64 / 1.02:.3f}x): points {verdicts}", flush=True)
        rows.append(("a speedup placed 2% from a threshold, same verdict", f"{verdicts.count(modal)} / {args.reruns}"))
        real = runs + [grade_once(str(SOLUTION)) for _ in range(max(0, args.consistency - len(runs)))]
        for name in ("b64", "b1"):
            covered, session = consistency(real, name)
            print(f"real pair {name}: {[round(r[name][0], 3) for r in real]}", flush=True)
            figures = [r[name][0] for r in real]
            blocks = [figures[i : i + args.runs] for i in range(0, len(figures) - args.runs + 1, args.runs)]
            rows.append(
                (
                    f"real pair, {name}: sd of the log figure over {len(real)} gradings; spread of each {args.runs}",
                    f"{statistics.stdev(math.log(f) for f in figures):.2%}; "
                    + ", ".join(f"{spread(b):.1%}" for b in blocks),
                )
            )
            rows.append(
                (
                    f"real pair, {name}: intervals covering the median of {len(real)} gradings; session noise",
                    f"{covered:.0%}; {session:.1%} (hw2 allows {hw2_session_noise():.0%})",
                )
            )
        folder = aa_folder(work)
        started = time.perf_counter()
        with pool(args.jobs) as executor:
            aa = list(executor.map(grade_once, [str(folder)] * args.aa))
        wall = time.perf_counter() - started
        for name in ("b64", "b1"):
            covered = sum(1 for r in aa if r[name][1] is not None and r[name][1] <= 1.0 <= r[name][2])
            rows.append((f"A/A interval coverage of 1.0, {name}, over {args.aa} gradings", f"{covered / args.aa:.0%}"))
        stops = [stop_of(r["b64"][3]) for r in aa]
        rounds = statistics.median(int(r["b64"][3].split()[0]) for r in aa)
        rows.append(
            (
                "A/A b64 (a verdict the noise keeps open): stopped settled / open / at the cap; median rounds",
                " / ".join(str(stops.count(s)) for s in ("settled", "open", "cap")) + f"; {rounds:.0f}",
            )
        )
        rows.append(("A/A speedup points, median (0 to 10)", f"{statistics.median(r['points'] for r in aa):.2f}"))
        rows.append(
            (
                f"100 hw2 submissions regraded, {args.jobs} pinned job(s) ({args.aa} A/A gradings scaled)",
                f"{wall / args.aa * 100 / 60:.1f} min",
            )
        )
    width = max(len(k) for k, _ in rows)
    print(f"\n{'figure'.ljust(width)} | measured")
    print(f"{'-' * width} | --------")
    for key, value in rows:
        print(f"{key.ljust(width)} | {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
