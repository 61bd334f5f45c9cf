"""hw1-baseline end to end: real models through the sandbox, each flaw failing the right check."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.contracts.result import CheckStatus
from tests import builders
from tests.builders import check_of
from tests.grading import grade

HW1 = "hw1-baseline"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hw1")
    model = builders.trained_tiny(epochs=2)
    return {
        "model": builders.export(model, folder / "model.onnx"),
        "fixed": builders.export_fixed_batch(model, folder / "fixed.onnx"),
        "folding": builders.reshaping_model(folder / "folding.onnx"),
        "inputs": builders.write_inputs(folder / "inputs.npz"),
    }


def _grade(files: dict[str, Path], model: str, root: Path, folder: Path, **manifest):
    manifest.setdefault("reported", {})
    sub = builders.submission(folder, {"baseline": files[model]}, files["inputs"], assignment=HW1, **manifest)
    return grade(sub, root).result


def _honest_report(path: Path) -> dict:
    import onnx

    from grader.worker.evidence.onnx_graph import onnx_evidence

    return {
        "size_mb": round(path.stat().st_size / 2**20, 4),
        "params": onnx_evidence(onnx.load(str(path))).params_total,
        "latency_ms": 0.5,
    }


def test_an_honest_baseline_gets_full_marks_and_its_figures_are_kept(files, fast_root: Path, tmp_path: Path) -> None:
    result = _grade(files, "model", fast_root, tmp_path / "s", reported=_honest_report(files["model"]))
    assert result.score == result.max_score == 100, [c.message for c in result.checks]
    for figure in ("size_mb", "params", "latency_ms_b1", "throughput_b32", "peak_rss_mb", "accuracy", "macs"):
        assert result.metrics[f"baseline.{figure}"].value is not None, figure
    latency = result.metrics["baseline.latency_ms_b1"]
    assert latency.low <= latency.value <= latency.high  # a median with its 95% interval
    assert "hardware differs" in check_of(result, "reported").message


def test_figures_that_disagree_with_the_file_fail_reported(files, fast_root: Path, tmp_path: Path) -> None:
    honest = _honest_report(files["model"])
    result = _grade(
        files, "model", fast_root, tmp_path / "s", reported={"size_mb": honest["size_mb"] * 2, "latency_ms": 99.0}
    )
    reported = check_of(result, "reported")
    assert reported.status is CheckStatus.FAIL and reported.points == 0
    assert "you reported" in reported.message and "parameters: not reported" in reported.message
    assert check_of(result, "measured").status is CheckStatus.PASS  # the flaw is the report, nothing else


def test_size_in_mb_instead_of_mib_is_accepted(files, fast_root: Path, tmp_path: Path) -> None:
    honest = _honest_report(files["model"])
    in_mb = {**honest, "size_mb": files["model"].stat().st_size / 1e6}
    reported = check_of(_grade(files, "model", fast_root, tmp_path / "s", reported=in_mb), "reported")
    assert reported.status is CheckStatus.PASS and "MB agrees" in reported.message


def test_outputs_that_change_shape_with_the_batch_fail_runs(files, fast_root: Path, tmp_path: Path) -> None:
    result = _grade(files, "folding", fast_root, tmp_path / "s")
    assert check_of(result, "loads").status is CheckStatus.PASS
    runs = check_of(result, "runs")
    assert runs.status is CheckStatus.FAIL
    assert "not 8 stacked batch-1 outputs" in runs.message and "eval mode" in runs.message  # the fix


def test_a_model_frozen_to_batch_1_runs_but_has_no_batch_32_throughput(files, fast_root: Path, tmp_path: Path) -> None:
    result = _grade(files, "fixed", fast_root, tmp_path / "s")
    runs = check_of(result, "runs")
    assert runs.status is CheckStatus.PASS and "fixed to 1" in runs.message
    measured = check_of(result, "measured")
    assert measured.status is CheckStatus.PARTIAL and measured.points == 24
    assert "throughput at batch 32" in measured.message and "dynamic batch axis" in measured.message
    assert result.metrics["baseline.latency_ms_b1"].value is not None
