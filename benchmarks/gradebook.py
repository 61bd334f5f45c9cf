"""Gradebook speed: 200 students x 7 assignments x 20 runs each (28,000 stored runs).

Builds a store of realistic results (31 figures and per-check evidence each, as hw2 writes them;
five teams have an error run, five a regraded run), 7 assignments with deadlines, late rules and a
leaderboard, then times each step a ``grader gradebook`` call takes and prints a table.
Target: the gradebook (store -> table) in <= 2 s. Run: ``python benchmarks/gradebook.py``.
"""

from __future__ import annotations

import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from grader.contracts.observations import Estimate  # noqa: E402
from grader.contracts.result import (  # noqa: E402
    AssignmentRef,
    CheckResult,
    CheckStatus,
    GraderRef,
    Result,
    RunContext,
    SubmissionRef,
)
from grader.gradebook.export import write_csv, write_excel, write_html, write_markdown  # noqa: E402
from grader.gradebook.load import Sources, open_gradebook  # noqa: E402
from grader.records.store import Store  # noqa: E402

STUDENTS, ASSIGNMENTS, RUNS = 200, 7, 20
IDS = [
    "hw1-baseline",
    "hw2-quantization-pruning",
    "hw3-clustering",
    "hw4-distillation",
    "hw5-auto-compression",
    "hw6-export",
    "final-project",
]
FIGURES = [
    f"{role}.{name}"
    for role in ("baseline", "candidate")
    for name in (
        "size_mb",
        "gzip_mb",
        "params",
        "quantized_fraction",
        "sparsity",
        "peak_rss_mb",
        "accuracy",
        "latency_ms_b1",
        "throughput_b1",
        "latency_ms_b64",
        "throughput_b64",
    )
] + [
    f"candidate_vs_baseline.{n}"
    for n in (
        "speedup_b1",
        "speedup_b64",
        "top1_agreement",
        "snr_db",
        "max_abs_error",
        "size_ratio",
        "gzip_ratio",
        "accuracy_drop_pts",
        "effective_sparsity",
    )
]


def write_course(folder: Path) -> tuple[Path, Path]:
    source = yaml.safe_load((ROOT / "assignments" / "hw2-quantization-pruning" / "assignment.yaml").read_text())
    assignments = folder / "assignments"
    for i, assignment_id in enumerate(IDS):
        config = dict(source, id=assignment_id, title=assignment_id)
        config["policy"] = {
            "deadline": f"2026-{3 + i:02d}-1{i} 23:59",
            "timezone": "Europe/Zurich",
            "late": {"per_day": 0.1, "cap": 0.5, "cutoff_days": 7},
            "counts": "last" if i % 3 == 2 else "best",
        }
        (assignments / assignment_id).mkdir(parents=True)
        (assignments / assignment_id / "assignment.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    roster = {
        "schema": 1,
        "teams": {
            f"team-{s:03d}": {
                "members": [
                    {
                        "github": f"student{s:03d}",
                        "name": f"Student {s}",
                        "student_id": f"S{s:05d}",
                        "email": f"s{s}@uni.example",
                    }
                ]
            }
            for s in range(STUDENTS)
        },
    }
    (folder / "roster.yaml").write_text(yaml.safe_dump(roster))
    return assignments, folder / "roster.yaml"


def results(rng: random.Random):
    for s in range(STUDENTS):
        team = f"team-{s:03d}"
        for a, assignment_id in enumerate(IDS):
            deadline = datetime(2026, 3 + a, 10 + a, 22, 59, tzinfo=timezone.utc)
            for r in range(RUNS):
                event = deadline - timedelta(days=10) + timedelta(hours=r * 12 + rng.random() * 10)
                score = round(min(100.0, 40 + r * 3 + rng.random() * 15), 2)
                checks = [
                    CheckResult(
                        id=f"check{k}",
                        title=f"Check {k}",
                        status=CheckStatus.PARTIAL,
                        points=score / 6,
                        max_points=100 / 6,
                        message="measured 0.93, needs 0.97. How to fix: ...",
                        evidence={"per_layer": {f"layer{j}": rng.random() for j in range(8)}},
                    )
                    for k in range(6)
                ]
                status = "error" if (s < 5 and r == 3) else "graded"
                sha = f"{rng.getrandbits(160):040x}"
                result = Result(
                    status=status,
                    assignment=AssignmentRef(id=assignment_id, version=1),
                    submission=SubmissionRef(
                        team=team,
                        members=[f"student{s:03d}"],
                        path=f"submissions/{team}/{assignment_id}",
                        files={"baseline.onnx": "0" * 64, "compressed.onnx": "1" * 64},
                    ),
                    score=0.0 if status == "error" else score,
                    max_score=100.0,
                    checks=checks,
                    metrics={f: Estimate(value=rng.random() * 3, unit="x") for f in FIGURES},
                    grader=GraderRef(version="0.1.0"),
                    context=RunContext(
                        repository="course/compression-2026", pr_number=s * 10 + a + 1, head_sha=sha, event_time=event
                    ),
                    started_at=event + timedelta(minutes=3),
                    duration_s=14.0,
                )
                yield result
                if 5 <= s < 10 and r == 5:  # regraded later: replaces the first grading of that commit
                    yield result.model_copy(
                        update={"score": min(100.0, score + 5), "started_at": event + timedelta(days=30)}
                    )


def timed(label: str, func, repeat: int = 3):
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = func()
        times.append(time.perf_counter() - t0)
    return label, statistics.median(times), max(times), value


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="gradebook-bench-"))
    try:
        assignments, roster = write_course(work)
        db = work / "grades.sqlite"
        rng = random.Random(0)
        t0 = time.perf_counter()
        with Store(db) as store:
            batch = list(results(rng))
            report = store.add_runs((r, "bench") for r in batch)
        build_s = time.perf_counter() - t0
        sources = Sources(db=db, assignments=assignments, roster=roster)

        def gradebook():
            with Store(db) as store:
                return open_gradebook(sources, store)

        rows = [timed("store -> gradebook (read 28,000 runs, policy, counted runs, student table)", gradebook)]
        book = rows[0][3]
        out = work / "out"
        out.mkdir()
        rows.append(
            timed(
                "write CSV (grades, every run) + Markdown",
                lambda: (write_csv(book, out / "g.csv"), write_markdown(book, out / "g.md")),
            )
        )
        rows.append(
            timed("write Excel (students, team grades, leaderboards)", lambda: write_excel(book, out / "g.xlsx"), 1)
        )
        rows.append(timed("write HTML with plots and every run", lambda: write_html(book, out / "g.html"), 1))
        cli = [
            sys.executable,
            "-m",
            "grader.cli",
            "gradebook",
            "--db",
            str(db),
            "--assignments",
            str(assignments),
            "--roster",
            str(roster),
            "--out",
            str(work / "cli"),
            "--formats",
            "csv,md",
            "--rows",
            "20",
        ]
        rows.append(
            timed(
                "`grader gradebook --formats csv,md` as a process (incl. start-up, printing)",
                lambda: subprocess.run(cli, cwd=ROOT, capture_output=True, check=True),
            )
        )

        print(
            f"\nstore: {report.added:,} runs of {STUDENTS} students x {ASSIGNMENTS} assignments x {RUNS} runs, "
            f"{db.stat().st_size / 2**20:.0f} MiB, built in {build_s:.1f} s"
        )
        print(
            f"gradebook: {len(book.students)} students, {len(book.grades)} team grades, "
            f"{int(book.runs['counted'].sum())} counted runs, {int((~book.runs['current']).sum())} replaced\n"
        )
        print(f"| {'step':<80} | median s | max s |")
        print(f"|{'-' * 82}|---------:|------:|")
        for label, median, worst, _ in rows:
            print(f"| {label:<80} | {median:8.2f} | {worst:5.2f} |")
        verdict = "meets" if rows[0][1] <= 2.0 else "MISSES"
        print(f"\nstore -> gradebook {rows[0][1]:.2f} s: {verdict} the <= 2 s target")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
