"""The command line as a user runs it: real processes, real exit codes, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GRADER = [sys.executable, "-m", "grader.cli"]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*GRADER, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_help_does_not_import_torch_or_onnxruntime() -> None:
    code = (
        "import sys; from grader.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'numpy', 'pandas', 'matplotlib', 'github')\n"
        "         if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    assert "exit codes" in out and "HEAVY []" in out


def test_usage_error_exit_code(tmp_path: Path) -> None:
    assert run("check", str(tmp_path / "nope")).returncode == 2
    assert run("frobnicate").returncode == 2


def test_reference_solution_gets_full_marks(reference_paths, tmp_path: Path) -> None:
    """The README's first command, as a student would run it (real timing budget and thresholds)."""
    out = tmp_path / "out"
    done = run("check", "reference/solutions/hw2-quantization-pruning", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "graded"
    assert result["score"] == result["max_score"] == 100, [c["message"] for c in result["checks"]]
    assert (out / "report.md").read_text().startswith("<!-- compression-grader:v1 team=course-staff")
    assert "<html" in (out / "report.html").read_text()
    assert "score 100 / 100" in done.stdout


@pytest.mark.parametrize(
    "assignment", ["hw1-baseline", "hw3-clustering", "hw4-distillation", "hw5-auto-compression", "hw6-export"]
)
def test_every_other_reference_solution_gets_full_marks(reference_paths, tmp_path: Path, assignment: str) -> None:
    """``grader check reference/solutions/<id>`` with the real thresholds and timing budgets.

    hw6's TensorRT check cannot run without a GPU: it is skipped and its points are pending, so
    the reference gets every point that can be graded here; bonus points come on top.
    """
    out = tmp_path / "out"
    done = run("check", f"reference/solutions/{assignment}", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "graded"
    regular = [c for c in result["checks"] if not c["bonus"]]
    assert all(c["status"] == "pass" or c["pending"] for c in regular), [c["message"] for c in regular]
    assert result["score"] >= result["max_score"] > 0
    assert result["max_score"] + result["pending_points"] == 100


def test_rejected_submission_writes_reports_to_the_default_folder(tmp_path: Path) -> None:
    folder = tmp_path / "submissions" / "team-beta" / "hw2"
    folder.mkdir(parents=True)
    (folder / "submission.yaml").write_text(
        "schema: 1\nassignment: hw2-quantization-pruning\nteam: team-beta\n"
        "members: [octocat]\nmodels: {baseline: b.onnx, candidate: c.onnx}\n"
        "data: {inputs: i.npz}\n"
    )
    done = run("check", str(folder), cwd=tmp_path)
    assert done.returncode == 3
    out = tmp_path / "grader-out" / "team-beta" / "hw2-quantization-pruning"
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "rejected" and "does not exist" in result["problems"][0]["message"]
    assert "What to fix" in (out / "report.md").read_text()
    assert "Traceback" not in done.stdout + done.stderr


def test_assignments_lists_checks_and_points() -> None:
    done = run("assignments")
    assert done.returncode == 0
    assert "hw2-quantization-pruning" in done.stdout and "speedup" in done.stdout and "100" in done.stdout
    for assignment in ("hw1-baseline", "hw3-clustering", "hw4-distillation", "hw5-auto-compression", "hw6-export"):
        assert assignment in done.stdout
    assert "bonus" in done.stdout  # hw4's beats_scratch


def test_every_option_of_every_subcommand_has_help() -> None:
    import argparse

    from grader.cli import build_parser

    def undocumented(parser: argparse.ArgumentParser, path: str):  # noqa: ANN202
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from undocumented(sub, f"{path} {name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                yield f"{path} {'/'.join(action.option_strings) or action.dest}"

    assert list(undocumented(build_parser(), "grader")) == []
