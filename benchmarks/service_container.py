"""Benchmark: the service track in a container (CI) against the local sandbox, same service.

Grades a copy of the reference service as if a team had submitted it, with the shipped
final-service assignment, alternating the local sandbox and the Docker service host (local,
docker, local, ...) so machine load drifts alike for both. Prints one table:
- wall time per grading (the Docker one includes building both images),
- best throughput of the "team" service and of the reference service under each host,
- the team-to-reference throughput ratio each host measured: the same service on both sides, so
  it should be about 1.0 under both (the container must treat them alike),
- the verdict (score) under each host.

Needs a Docker engine ($DOCKER_HOST). Without --image it builds the registry-free test image of
this checkout (tests/docker_host.py).

Run: .venv/bin/python benchmarks/service_container.py [--runs 2] [--image IMAGE --mount PATH ...]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.config.course import DockerSettings  # noqa: E402
from grader.grading.pipeline import grade  # noqa: E402
from grader.sandbox.base import Sandboxes  # noqa: E402
from grader.sandbox.docker import engine  # noqa: E402
from grader.sandbox.local import run_worker  # noqa: E402
from grader.sandbox.service_docker import DockerServiceHost  # noqa: E402
from grader.sandbox.service_local import LocalServiceHost  # noqa: E402
from reference.build import ensure_built  # noqa: E402


def team_copy_of_the_reference(folder: Path) -> Path:
    """The reference service with its model next to it, submitted the way a team would."""
    config = yaml.safe_load((ROOT / "assignments" / "final-service" / "assignment.yaml").read_text())["service"]
    folder.mkdir(parents=True)
    shutil.copy(ROOT / config["reference_folder"] / "app.py", folder / "app.py")
    shutil.copy(ROOT / config["reference_model"], folder / "digits_cnn.onnx")
    (folder / "submission.yaml").write_text(
        yaml.safe_dump(
            {
                "schema": 1,
                "assignment": "final-service",
                "team": "benchmark",
                "members": ["octocat"],
                "service": {"command": config["reference_command"]},
            },
            sort_keys=False,
        )
    )
    return folder


def settings_for(args: argparse.Namespace) -> DockerSettings:
    if args.image:
        return DockerSettings(image=args.image, service_mounts=args.mount, pull=False, gpus="none")
    from tests import docker_host

    return docker_host.settings(engine(), gpus="none")


def timed(folder: Path, host) -> dict:
    started = time.perf_counter()
    grading = grade(folder, Sandboxes(run_worker, host))
    elapsed = time.perf_counter() - started
    result = grading.result
    assert result.status == "graded", (result.problems, grading.internal_error)
    metric = result.metrics
    return {
        "wall": elapsed,
        "team": metric["service.best_throughput"].value,
        "reference": metric["reference_service.best_throughput"].value,
        "ratio": metric["service_vs_reference_service.throughput_ratio"].value,
        "score": result.score,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--image", help="a grading image already on the engine (default: the test image)")
    parser.add_argument("--mount", action="append", default=[], help="read-only host path the image needs")
    args = parser.parse_args()
    ensure_built(quiet=True)
    hosts = {"local sandbox": LocalServiceHost(), "docker": DockerServiceHost(settings_for(args))}
    rows: dict[str, list[dict]] = {name: [] for name in hosts}
    with tempfile.TemporaryDirectory() as work:
        folder = team_copy_of_the_reference(Path(work) / "final-service")
        for _ in range(args.runs):
            for name, host in hosts.items():
                rows[name].append(timed(folder, host))
    print(f"{'host':<14} {'wall s':>8} {'team req/s':>11} {'ref req/s':>10} {'team/ref':>9} {'range':>11} {'score':>6}")
    for name, runs in rows.items():
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        spread = f"{min(r['ratio'] for r in runs):.2f}-{max(r['ratio'] for r in runs):.2f}"
        print(
            f"{name:<14} {med['wall']:8.1f} {med['team']:11.0f} {med['reference']:10.0f} {med['ratio']:9.2f} "
            f"{spread:>11} {med['score']:6.1f}"
        )
    local, docker = (statistics.median(r["reference"] for r in rows[n]) for n in hosts)
    print(
        f"reference throughput in the container vs the local sandbox: {docker / local:.2f}x "
        f"(median of {args.runs} run(s) each, alternating)"
    )


if __name__ == "__main__":
    main()
