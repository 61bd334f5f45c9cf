"""What a hostile review built to get hw2's points without compressing anything (tests.hostile_models),
graded for real: none of it earns more than the file's own storage is worth."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader import exitcodes
from grader.contracts.result import CheckStatus, Result
from tests import hostile_models
from tests.builders import check_of
from tests.grading import grade


def _graded(folder: Path, root: Path) -> Result:
    grading = grade(folder, root)
    assert grading.exit_code == exitcodes.GRADED, grading.result.problems
    return grading.result


def _points(result: Result) -> dict[str, float]:
    return {c.id: c.points for c in result.checks}


@pytest.mark.parametrize(
    "build", [hostile_models.decoy_first_output, hostile_models.offset_scores], ids=["decoy", "offset"]
)
def test_an_untrained_model_behind_a_decoy_output_or_an_offset_is_not_faithful(
    build, reference_paths, fast_root: Path, tmp_path: Path
) -> None:
    """Judging only the first output, or SNR around zero instead of the outputs' spread, gave 100/100."""
    result = _graded(build(tmp_path / "case"), fast_root)
    points = _points(result)
    assert points["fidelity"] == 0, check_of(result, "fidelity").message
    assert points["size"] == 0 and points["speedup"] == 0  # no credit for the speed of a model that is wrong
    assert "Not credited while 'fidelity' fails" in check_of(result, "size").message
    assert result.score <= 60


@pytest.mark.parametrize("variant", ["if", "ops"])
def test_fp32_weights_hidden_from_the_evidence_are_found(variant: str, reference_paths, fast_root, tmp_path) -> None:
    """The fp32 baseline behind an int8 decoy scored 80/100 as 'quantized 100%, pruned 60%'."""
    result = _graded(hostile_models.hidden_fp32(tmp_path / "case", variant), fast_root)
    points = _points(result)
    assert points["quantized"] == 0 and points["pruned"] == 0, (
        check_of(result, "quantized").message,
        check_of(result, "pruned").message,
    )
    if variant == "if":  # FusedConv and Einsum are known layers now; an If is flagged for staff
        assert any("the graph has a If" in flag for flag in result.flags), result.flags


def test_two_int8_tensors_summed_into_one_weight_are_not_int8(reference_paths, fast_root, tmp_path) -> None:
    result = _graded(hostile_models.int8_pairs(tmp_path / "case"), fast_root)
    quantized = check_of(result, "quantized")
    assert quantized.points == 0 and quantized.status is CheckStatus.FAIL, quantized.message
    assert "combined" in quantized.message  # the float list names them as combined integer tensors


def test_a_baseline_padded_with_unused_external_bytes_is_rejected(reference_paths, fast_root, tmp_path) -> None:
    grading = grade(hostile_models.padded_external_baseline(tmp_path / "case"), fast_root)
    assert grading.exit_code == exitcodes.REJECTED
    (problem,) = grading.result.problems
    assert "bytes that no tensor of the model uses" in problem.message and "baseline.data" in problem.message


def test_the_same_baseline_saved_with_external_data_as_onnx_writes_it_is_accepted(
    reference_paths, fast_root, tmp_path
) -> None:
    import os

    import onnx

    folder = hostile_models.padded_external_baseline(tmp_path / "case")
    os.remove(folder / "baseline.data")
    onnx.save(
        onnx.load(str(hostile_models.SOLUTION / "baseline.onnx")),
        str(folder / "baseline.onnx"),
        save_as_external_data=True,
        location="baseline.data",
        size_threshold=0,
    )
    result = _graded(folder, fast_root)
    assert result.score == result.max_score, [(c.id, c.message) for c in result.checks if c.points < c.max_points]
