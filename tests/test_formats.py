"""Every accepted model format loads in the sandbox and is measured like ONNX; unsafe ones do not run."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from grader.contracts.result import CheckStatus
from grader.worker.runtime import load_model
from tests import builders
from tests.grading import grade


def agreement(result) -> float:
    return result.metrics["candidate_vs_baseline.top1_agreement"].value


def test_safetensors_with_a_course_architecture(reference_paths, fast_root: Path, tmp_path: Path) -> None:
    models = reference_paths
    folder = builders.submission(
        tmp_path / "s",
        {"baseline": models["model_onnx"], "candidate": models["model_safetensors"]},
        models["eval_npz"],
        models={
            "baseline": "baseline.onnx",
            "candidate": {"path": "candidate.safetensors", "architecture": "digits-cnn"},
        },
    )
    result = grade(folder, fast_root).result
    loads = next(c for c in result.checks if c.id == "loads")
    assert loads.status is CheckStatus.PASS, loads.message
    assert "safetensors" in loads.message
    assert agreement(result) == 1.0  # the same weights, loaded through torch instead of onnxruntime


@pytest.fixture(scope="module")
def tiny_torch_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("torchfiles")
    model = builders.trained_tiny(epochs=1)
    example = torch.zeros(2, 1, 8, 8)
    scripted = torch.jit.trace(model, example)
    scripted.save(str(folder / "model.ts"))
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(folder / "model.pt2"))
    onnx = builders.export(model, folder / "model.onnx")
    return {
        "onnx": onnx,
        "torchscript": folder / "model.ts",
        "pt2": folder / "model.pt2",
        "inputs": builders.confident_inputs(folder / "inputs.npz", [onnx]),
    }


def test_a_torchscript_submission_is_rejected_with_how_to_export(tiny_torch_files, fast_root: Path, tmp_path: Path):
    files = tiny_torch_files
    folder = builders.submission(
        tmp_path / "ts", {"baseline": files["onnx"], "candidate": files["torchscript"]}, files["inputs"]
    )
    grading = grade(folder, fast_root)
    assert grading.result.status == "rejected"
    problem = grading.result.problems[0]
    assert "TorchScript" in problem.message and "torch.export.save" in problem.hint


@pytest.mark.parametrize("fmt", ["pt2"])
def test_torch_formats_agree_with_their_onnx_export(
    fmt: str, tiny_torch_files, fast_root: Path, tmp_path: Path
) -> None:
    files = tiny_torch_files
    folder = builders.submission(tmp_path / fmt, {"baseline": files["onnx"], "candidate": files[fmt]}, files["inputs"])
    result = grade(folder, fast_root).result
    assert result.status == "graded", result.problems
    assert next(c for c in result.checks if c.id == "loads").status is CheckStatus.PASS
    assert agreement(result) == 1.0
    assert result.metrics["candidate.params"].value == result.metrics["baseline.params"].value


class Payload:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pt2_with_pickled_sample_inputs_is_refused_before_torch_export_load(tiny_torch_files, tmp_path: Path) -> None:
    """``torch.export.load`` retries sample inputs with ``weights_only=False``; the loader must refuse first."""
    marker = tmp_path / "PAYLOAD_RAN"
    payload = Payload()
    payload.marker = marker
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    hostile = tmp_path / "hostile.pt2"
    with zipfile.ZipFile(tiny_torch_files["pt2"]) as src, zipfile.ZipFile(hostile, "w") as dst:
        for info in src.infolist():
            data = buffer.getvalue() if "/sample_inputs/" in info.filename else src.read(info.filename)
            dst.writestr(info, data)
    from grader.errors import SubmissionError
    from grader.intake.pt2 import vetted_program

    with pytest.raises(SubmissionError, match="sample inputs") as refused:  # the host refuses it, without torch
        vetted_program(hostile, "hostile.pt2")
    assert refused.value.kind == "pickle"
    with pytest.raises(PermissionError, match="sample inputs"):  # and the worker would too
        load_model(hostile, "pt2", threads=1)
    assert not marker.exists(), "the pickled sample inputs were executed"
    # the payload is live: unpickling it the unsafe way would have created the marker
    pickle.loads(pickle.dumps(payload))
    assert marker.exists()
