"""Benchmark: what the Docker runner adds to a grading, against the local runner, same submission.

Grades the hw2 reference solution with both runners, alternating (local, docker, local, ...), so
machine load drifts alike for both; prints one table:
- wall time per grading with each runner, and the paired difference (target: under 3 s extra),
- the bare start-to-result cost of each sandbox for a command that does nothing,
- whether every docker verdict equalled the local one, and the speedup each runner measured.

Needs a Docker engine ($DOCKER_HOST). Without --image it builds the registry-free test image of
this checkout (tests/docker_host.py), so what is timed is the runner, not a different Python.

Run: .venv/bin/python benchmarks/docker_overhead.py [--runs 3] [--image IMAGE --mount PATH ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.config.course import DockerSettings  # noqa: E402
from grader.contracts.job import Limits  # noqa: E402
from grader.grading.pipeline import grade  # noqa: E402
from grader.sandbox.base import Sandboxes  # noqa: E402
from grader.sandbox.docker import DockerSandbox, engine, run_in_container  # noqa: E402
from grader.sandbox.local import isolation, run_sandboxed, run_worker  # noqa: E402
from grader.sandbox.service_local import LocalServiceHost  # noqa: E402
from reference.build import ensure_built  # noqa: E402

SOLUTION = ROOT / "reference" / "solutions" / "hw2-quantization-pruning"
TARGET_EXTRA_S = 3.0


def settings_for(args: argparse.Namespace) -> DockerSettings:
    if args.image:
        return DockerSettings(image=args.image, readonly_mounts=args.mount, pull=False)
    from tests import docker_host

    return docker_host.settings(engine())


def timed_grade(runner) -> tuple[float, tuple, float]:
    """Wall time, verdict and measured batch-64 speedup of one grading."""
    started = time.perf_counter()
    grading = grade(SOLUTION, Sandboxes(runner or run_worker, LocalServiceHost()))
    elapsed = time.perf_counter() - started
    result = grading.result
    assert result.status == "graded", (result.problems, grading.internal_error)
    verdict = (result.status, result.score, [(c.id, c.status) for c in result.checks])
    return elapsed, verdict, result.metrics["candidate_vs_baseline.speedup_b64"].value


def bare_start(settings: DockerSettings, runs: int) -> tuple[float, float]:
    """Median seconds from start to exit of ``python -c pass``: child process vs container."""
    local, docker = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as work:
            local.append(run_sandboxed([sys.executable, "-c", "pass"], Limits(), Path(work), []).wall_s)
        with tempfile.TemporaryDirectory() as work:
            started = time.perf_counter()
            done = run_in_container(["python", "-c", "pass"], settings, Limits(), Path(work), {})
            assert done.returncode == 0, done.output_tail
            docker.append(time.perf_counter() - started)
    return statistics.median(local), statistics.median(docker)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image", help="a grading image to time instead of the test image")
    parser.add_argument("--mount", action="append", default=[], help="read-only host path for --image")
    args = parser.parse_args()
    ensure_built()
    settings = settings_for(args)
    docker_runner = DockerSandbox(settings)
    local_s, docker_s, same, speedups = [], [], [], {"local": [], "docker": []}
    for i in range(args.runs):
        local_time, local_verdict, speedups_local = timed_grade(None)
        docker_time, docker_verdict, speedups_docker = timed_grade(docker_runner)
        local_s.append(local_time)
        docker_s.append(docker_time)
        speedups["local"].append(speedups_local)
        speedups["docker"].append(speedups_docker)
        same.append(local_verdict == docker_verdict)
        print(
            f"run {i + 1}/{args.runs}: local {local_time:.1f} s, docker {docker_time:.1f} s, same verdict: {same[-1]}",
            flush=True,
        )
    bare_local, bare_docker = bare_start(settings, max(5, args.runs))
    extra = statistics.median(d - loc for d, loc in zip(docker_s, local_s))
    rows = [
        ("grading, local runner (median)", f"{statistics.median(local_s):.2f} s", ""),
        ("grading, docker runner (median)", f"{statistics.median(docker_s):.2f} s", ""),
        ("docker extra per grading (median of paired differences)", f"{extra:+.2f} s", f"< {TARGET_EXTRA_S:g} s"),
        (f"bare start-to-exit, local sandbox ({isolation()})", f"{bare_local:.2f} s", ""),
        ("bare start-to-exit, container (create, start, wait, logs, remove)", f"{bare_docker:.2f} s", ""),
        ("docker verdict equals local verdict", f"{sum(same)}/{len(same)}", "all"),
        ("measured speedup at batch 64, local (median)", f"{statistics.median(speedups['local']):.2f}x", ""),
        ("measured speedup at batch 64, docker (median)", f"{statistics.median(speedups['docker']):.2f}x", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'measured':>10}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>10}  {target}")
    return 0 if extra < TARGET_EXTRA_S and all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
