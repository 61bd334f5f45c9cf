"""hw6-export end to end: a torch source and its ONNX export, each flaw failing the right check;
TensorRT skipped with its points pending where there is no GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from grader import exitcodes
from grader.ci.artifact import Expected, load_result_artifact
from grader.config.assignment import load_assignment
from grader.contracts.result import CheckStatus, RunContext
from tests import builders
from tests.builders import check_of
from tests.grading import grade

HW6 = "hw6-export"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hw6")
    model = builders.trained_tiny(epochs=2)
    other = builders.trained_tiny(seed=1, epochs=1)
    out = {
        "source": builders.torch_source(model, folder / "source.pt2"),
        "onnx": builders.export(model, folder / "model.onnx"),
        "fixed": builders.export_fixed_batch(model, folder / "fixed.onnx"),
        "old_opset": builders.export_fixed_batch(model, folder / "opset13.onnx", batch=1, opset=13),
        "other_weights": builders.export(other, folder / "other.onnx"),
        "inputs": builders.write_inputs(folder / "inputs.npz"),
    }
    proto = onnx.load(str(out["onnx"]))
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7  # declares [N, 7]; the graph makes [N, 10]
    out["wrong_shape"] = folder / "wrong_shape.onnx"
    onnx.save(proto, str(out["wrong_shape"]))
    return out


@pytest.fixture(scope="module")
def graded(files, fast_root: Path, tmp_path_factory: pytest.TempPathFactory):
    cache: dict[tuple, object] = {}

    def run(onnx_file: str = "onnx", source: str = "source", **manifest):
        key = (onnx_file, source, repr(manifest))
        if key not in cache:
            manifest.setdefault("claims", {"tensorrt": True})
            folder = builders.submission(
                tmp_path_factory.mktemp(onnx_file),
                {"source": files[source], "onnx": files[onnx_file]},
                files["inputs"],
                assignment=HW6,
                **manifest,
            )
            cache[key] = grade(folder, fast_root)
        return cache[key]

    return run


def test_a_faithful_dynamic_export_passes_and_tensorrt_is_pending_without_a_gpu(graded) -> None:
    result = graded().result
    for check_id in ("loads", "onnx_valid", "parity", "dynamic_batch"):
        assert check_of(result, check_id).status is CheckStatus.PASS, check_of(result, check_id).message
    parity = check_of(result, "parity")
    assert parity.evidence["outputs"][0]["max_abs_error"] < 1e-4 and "max rel" in parity.message
    tensorrt = check_of(result, "tensorrt")
    assert tensorrt.status is CheckStatus.SKIPPED and tensorrt.pending and tensorrt.points == 0
    assert "TensorRT" in tensorrt.message or "CUDA" in tensorrt.message
    assert result.pending_points == 15 and result.max_score == 85  # pending counts neither for nor against


def test_the_publisher_accepts_a_result_with_the_tensorrt_check_pending(
    graded, fast_root: Path, tmp_path: Path
) -> None:
    """What the GPU runner uploads when TensorRT is missing must post as a grade, not as a grader error."""
    context = RunContext(repository="course/grading", pr_number=3, head_sha="c" * 40, run_id=41)
    result = graded().result.model_copy(update={"context": context})
    (tmp_path / "result.json").write_text(result.to_json())
    expected = Expected("course/grading", 3, "c" * 40, 41, result.submission.team, HW6)
    posted = load_result_artifact(tmp_path / "result.json", expected, load_assignment(HW6, fast_root))
    assert posted.status == "graded" and posted.max_score == 85 and posted.pending_points == 15


def test_a_batch_frozen_export_fails_dynamic_batch_only(graded) -> None:
    result = graded("fixed").result
    dynamic = check_of(result, "dynamic_batch")
    assert dynamic.status is CheckStatus.FAIL
    assert "batch dimension to 1" in dynamic.message and "dynamic_axes" in dynamic.message  # what, and the fix
    assert check_of(result, "parity").status is CheckStatus.PASS
    assert check_of(result, "onnx_valid").status is CheckStatus.PASS


def test_an_old_opset_gets_half_of_onnx_valid(graded) -> None:
    valid = check_of(graded("old_opset").result, "onnx_valid")
    assert valid.status is CheckStatus.PARTIAL and valid.points == 10
    assert "opset is 13, below the required 17" in valid.message


def test_a_declared_shape_that_contradicts_the_graph_fails_onnx_valid(graded) -> None:
    result = graded("wrong_shape").result
    valid = check_of(result, "onnx_valid")
    assert valid.status is CheckStatus.FAIL and "shape inference" in valid.message
    assert valid.evidence["shape_inference_error"]


def test_an_export_of_other_weights_fails_parity_with_per_output_errors(graded) -> None:
    parity = check_of(graded("other_weights").result, "parity")
    assert parity.status is CheckStatus.FAIL
    assert "logits" in parity.message and "max abs" in parity.message and "x the tolerance" in parity.message
    assert parity.evidence["outputs"][0]["tolerance_ratio"] > 1


def test_without_the_tensorrt_claim_nothing_is_pending(graded) -> None:
    result = graded(claims={}).result
    tensorrt = check_of(result, "tensorrt")
    assert tensorrt.status is CheckStatus.FAIL and not tensorrt.pending and "tensorrt: true" in tensorrt.message
    assert result.pending_points == 0 and result.max_score == 100


def test_an_onnx_file_as_the_source_is_rejected_with_the_formats_to_use(graded) -> None:
    grading = graded(source="onnx")
    assert grading.exit_code == exitcodes.REJECTED
    problem = grading.result.problems[0]
    assert problem.kind == "format" and ".pt2" in problem.message


def test_the_engine_build_reports_why_tensorrt_is_unavailable(files) -> None:
    """The worker's TensorRT path: here there is no TensorRT (or no GPU), and it says so."""
    from grader.contracts.job import DerivedSpec
    from grader.worker.runtime import load_model
    from grader.worker.session import build_derived

    source = load_model(files["onnx"], "onnx", threads=1)
    status = build_derived(
        DerivedSpec(role="tensorrt", source="onnx", runtime="tensorrt"),
        files["onnx"],
        source,
        {"input": np.zeros((4, 1, 8, 8), np.float32)},
    )
    if isinstance(status, tuple):
        pytest.skip("TensorRT and a CUDA device are present: the engine was built (covered on the GPU runner)")
    assert status.status == "unavailable"
    assert "TensorRT is not installed" in status.reason or "no CUDA device" in status.reason
