"""A model is all of its files: torch's default ONNX export (``model.onnx`` + ``model.onnx.data``)
is measured, listed and compared as one model, in hw2 and in the final project.

The files are written the way a student's torch writes them: ``torch.onnx.export`` with its
defaults (the dynamo exporter, external data), from the trained course model.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from grader import exitcodes
from grader.contracts.result import CheckStatus, Result
from tests.builders import check_of
from tests.grading import grade

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "reference" / "solutions"
MIB = 2**20


def course_model(reference_paths) -> torch.nn.Module:  # noqa: ANN001
    from safetensors.torch import load_file

    from reference.digits_cnn import DigitsCNN

    model = DigitsCNN()
    model.load_state_dict(load_file(str(reference_paths["model_safetensors"])))
    return model.eval()


def default_export(model: torch.nn.Module, path: Path) -> Path:
    """What a student's ``torch.onnx.export`` call writes: defaults, plus a dynamic batch axis."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 8, 8),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    return path


@pytest.fixture(scope="module")
def exported(reference_paths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = default_export(course_model(reference_paths), tmp_path_factory.mktemp("export") / "model.onnx")
    data = path.with_name("model.onnx.data")
    assert data.is_file() and data.stat().st_size > 50 * path.stat().st_size  # the weights live in .data
    return path


def _copy_model(source: Path, folder: Path, name: str) -> int:
    """Copy an ONNX file and its external data under ``name``; their total size in bytes."""
    shutil.copy(source, folder / name)
    shutil.copy(source.with_name(source.name + ".data"), folder / f"{source.name}.data")
    return (folder / name).stat().st_size + (folder / f"{source.name}.data").stat().st_size


def _graded(folder: Path, root: Path) -> Result:
    grading = grade(folder, root)
    assert grading.exit_code == exitcodes.GRADED, grading.result.problems
    return grading.result


def test_hw2_baseline_exported_with_external_data_is_measured_with_its_data(
    exported: Path, fast_root: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "hw2"
    shutil.copytree(SOLUTIONS / "hw2-quantization-pruning", folder)
    (folder / "baseline.onnx").unlink()
    total = _copy_model(exported, folder, "baseline.onnx")  # baseline.onnx names model.onnx.data inside
    result = _graded(folder, fast_root)
    assert result.metrics["baseline.size_mb"].value == pytest.approx(total / MIB, rel=1e-6)
    assert set(result.submission.model_files["baseline"]) == {"baseline.onnx", "model.onnx.data"}
    assert check_of(result, "size").status is CheckStatus.PASS, check_of(result, "size").message
    assert check_of(result, "fidelity").status is CheckStatus.PASS, check_of(result, "fidelity").message


def test_a_final_entry_that_only_re_exports_the_fp32_model_earns_no_size_ratio(
    exported: Path, fast_root: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "final"
    shutil.copytree(SOLUTIONS / "final-project", folder)
    (folder / "candidate.onnx").unlink()
    total = _copy_model(exported, folder, "candidate.onnx")
    manifest = yaml.safe_load((folder / "submission.yaml").read_text())
    manifest.pop("claims", None)
    (folder / "submission.yaml").write_text(yaml.safe_dump(manifest))
    result = _graded(folder, fast_root)
    assert result.metrics["candidate.size_mb"].value == pytest.approx(total / MIB, rel=1e-6)
    ratio = result.metrics["candidate_vs_reference.size_ratio"].value
    assert 0.8 < ratio < 1.25, ratio  # the same fp32 weights as the reference; counting .onnx alone read 164.9x
    assert "model.onnx.data" in result.submission.model_files["candidate"]
