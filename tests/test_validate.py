"""``grader assignments --validate``: every shipped assignment is valid, and each kind of staff
mistake in a copy is found before any submission is graded, named, with exit code 2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENTS = ROOT / "assignments"


def validate(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grader.cli", "assignments", "--validate", "--assignments", str(root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_every_shipped_assignment_is_valid() -> None:
    done = validate(ASSIGNMENTS)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = sorted(p.name for p in ASSIGNMENTS.iterdir() if (p / "assignment.yaml").is_file())
    assert f"{len(ids)} of {len(ids)} assignment(s) valid" in done.stdout
    assert all(f"valid    {i}:" in done.stdout for i in ids)


def _broken_copy(tmp_path: Path, assignment: str, edit) -> Path:  # noqa: ANN001
    root = tmp_path / "assignments"
    shutil.copytree(ASSIGNMENTS / assignment, root / assignment)
    path = root / assignment / "assignment.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return root


def _check(data: dict, check_id: str) -> dict:
    return next(c for c in data["checks"] if c["id"] == check_id)


@pytest.mark.parametrize(
    "assignment, edit, complaint",
    [
        ("hw2-quantization-pruning", lambda d: _check(d, "size").update(rule="treshold"), "unknown rule 'treshold'"),
        ("hw2-quantization-pruning", lambda d: _check(d, "quantized")["params"].update(ful=0.9), "params.ful"),
        ("hw2-quantization-pruning", lambda d: _check(d, "quantized")["params"].update(full="high"), "params.full"),
        (
            "hw2-quantization-pruning",
            lambda d: _check(d, "pruned")["params"].update(model="candidat"),
            "names role 'candidat'",
        ),
        ("hw2-quantization-pruning", lambda d: _check(d, "size")["params"].pop("full"), "needs metric, full and zero"),
        ("hw2-quantization-pruning", lambda d: d["checks"].append(dict(_check(d, "size"))), "check ids must be unique"),
        ("hw3-clustering", lambda d: _check(d, "clustered")["params"].update(max_k="many"), "params.max_k"),
        ("hw1-baseline", lambda d: _check(d, "reported")["params"]["items"][0].update(rtoll=0.02), "items.0.rtoll"),
    ],
)
def test_a_staff_mistake_is_named_before_anything_is_graded(
    tmp_path: Path,
    assignment: str,
    edit,  # noqa: ANN001
    complaint: str,
) -> None:
    done = validate(_broken_copy(tmp_path, assignment, edit))
    assert done.returncode == 2, done.stdout + done.stderr
    assert complaint in done.stderr and f"invalid  {assignment}" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_checker_that_imports_grader_internals_is_refused(tmp_path: Path) -> None:
    root = _broken_copy(tmp_path, "hw3-clustering", lambda d: None)
    checker = root / "hw3-clustering" / "checker.py"
    checker.write_text(
        checker.read_text().replace(
            "from grader.checks.api import",
            "from grader.grading.figures import summarize  # noqa: F401\nfrom grader.checks.api import",
        )
    )
    done = validate(root)
    assert done.returncode == 2 and "imports grader.grading.figures" in done.stderr, done.stderr


def test_the_pipeline_refuses_a_broken_assignment_before_the_worker_runs(tmp_path: Path) -> None:
    """A mistyped parameter is the grader's error (exit 4), found before any model is loaded."""
    from grader import exitcodes
    from tests.grading import grade

    root = _broken_copy(tmp_path, "hw2-quantization-pruning", lambda d: _check(d, "size")["params"].update(ful=3))
    grading = grade(ROOT / "reference/solutions/hw2-quantization-pruning", root)
    assert grading.exit_code == exitcodes.INTERNAL and grading.result.status == "error"
    assert "params.ful" in grading.internal_error
    assert grading.result.duration_s < 5  # nothing was loaded or timed
