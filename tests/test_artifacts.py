"""Host-side vetting (grader.intake.artifacts): every refusal happens before anything is loaded or run.

The files are real: ONNX from torch.onnx.export, TorchScript from torch.jit.save, programs from
torch.export.save, pickles from pickle / torch.save. Hostile variants are the real files with
exactly one thing changed (a JSON flag, a location, an extra archive member).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from grader.errors import SubmissionError
from grader.intake import pt2
from grader.intake.artifacts import resolve_inside, sniff, vet_model
from tests.builders import TinyCNN, export

EXAMPLE = (torch.zeros(1, 1, 8, 8),)
# torch.jit.trace is deprecated in torch 2.13 but TorchScript is still a format students submit
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")


class _TouchOnUnpickle:
    """Unpickling this creates ``marker``: proof that an unpickler ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def tiny() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tiny: TinyCNN) -> dict[str, Path]:
    """One genuine file per readable format, built once for the module."""
    folder = tmp_path_factory.mktemp("formats")
    files = {"onnx": export(tiny, folder / "model.onnx")}
    torch.jit.trace(tiny, EXAMPLE).save(str(folder / "scripted.pt"))
    files["torchscript"] = folder / "scripted.pt"
    torch.export.save(torch.export.export(tiny, EXAMPLE), str(folder / "program.pt2"))
    files["pt2"] = folder / "program.pt2"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(folder / "weights.safetensors"))
    files["safetensors"] = folder / "weights.safetensors"
    np.savez(folder / "inputs.npz", input=np.zeros((4, 1, 8, 8), np.float32), labels=np.arange(4))
    files["npz"] = folder / "inputs.npz"
    return files


def _refusal(call, *args, **kwargs) -> SubmissionError:  # noqa: ANN001
    with pytest.raises(SubmissionError) as info:
        call(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------- resolve_inside


def test_resolve_inside_accepts_a_plain_file_in_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.onnx").write_bytes(b"x")
    assert resolve_inside(tmp_path, "models/m.onnx", "model") == tmp_path.resolve() / "models" / "m.onnx"


def test_resolve_inside_refuses_parent_traversal(tmp_path: Path) -> None:
    root = tmp_path / "sub"
    root.mkdir()
    (tmp_path / "x").write_bytes(b"secret")  # exists, so only the '..' can be the reason
    err = _refusal(resolve_inside, root, "../x", "model")
    assert err.kind == "path"
    assert "leaves the submission folder" in err.message and "relative" in err.hint


def test_resolve_inside_refuses_dotdot_in_the_middle(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert _refusal(resolve_inside, tmp_path, "a/../m.onnx", "model").kind == "path"


@pytest.mark.parametrize("relpath", ["/etc/passwd", "\\windows\\system.ini", "C:\\model.onnx"])
def test_resolve_inside_refuses_absolute_paths(tmp_path: Path, relpath: str) -> None:
    err = _refusal(resolve_inside, tmp_path, relpath, "model")
    assert err.kind == "path"
    assert "absolute" in err.message and "relative to your submission folder" in err.hint


def test_resolve_inside_refuses_a_symlink_pointing_outside(tmp_path: Path) -> None:
    root = tmp_path / "submission"
    root.mkdir()
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "model.onnx")
    err = _refusal(resolve_inside, root, "model.onnx", "model")
    assert err.kind == "path"
    assert "symbolic link" in err.message and "real file" in err.hint


def test_resolve_inside_refuses_a_symlinked_intermediate_directory(tmp_path: Path) -> None:
    root = tmp_path / "submission"
    root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.onnx").write_bytes(b"x")
    os.symlink(elsewhere, root / "models")
    err = _refusal(resolve_inside, root, "models/model.onnx", "model")
    assert err.kind == "path" and "symbolic link" in err.message


def test_resolve_inside_refuses_a_symlink_even_when_it_stays_inside(tmp_path: Path) -> None:
    (tmp_path / "real.onnx").write_bytes(b"x")
    os.symlink(tmp_path / "real.onnx", tmp_path / "link.onnx")
    assert _refusal(resolve_inside, tmp_path, "link.onnx", "model").kind == "path"


def test_resolve_inside_reports_a_missing_file_and_how_to_fix_it(tmp_path: Path) -> None:
    err = _refusal(resolve_inside, tmp_path, "nothere.onnx", "model 'candidate'")
    assert err.kind == "missing"
    assert "'nothere.onnx' does not exist" in err.message
    assert "git add" in err.hint and "submission.yaml" in err.hint


def test_resolve_inside_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").mkdir()
    assert _refusal(resolve_inside, tmp_path, "model.onnx", "model").kind == "path"


# --------------------------------------------------------------------------- sniff


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2", "safetensors", "npz"])
def test_sniff_recognises_each_safe_format(built: dict[str, Path], fmt: str) -> None:
    path = built[fmt]
    assert sniff(path, path.name, "model") == fmt


def test_sniff_goes_by_content_not_by_name(built: dict[str, Path], tmp_path: Path) -> None:
    renamed = tmp_path / "weights.bin"  # a suffix that would otherwise be refused as a pickle
    renamed.write_bytes(built["safetensors"].read_bytes())
    assert sniff(renamed, "weights.bin", "model") == "safetensors"


def test_sniff_refuses_a_pickle_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.onnx"  # a harmless-looking name: the bytes decide
    path.write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    # the payload is live: a real unpickler would create the marker (checked on a copy, then removed)
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()

    err = _refusal(sniff, path, "model.onnx", "model 'candidate'")
    assert err.kind == "pickle"
    assert "nothing in the file was executed" in err.message
    assert "ONNX" in err.hint and "safetensors" in err.hint
    assert not marker.exists()


def test_sniff_refuses_a_pickle_through_vet_model_too(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    (tmp_path / "model.pt").write_bytes(pickle.dumps(_TouchOnUnpickle(marker), protocol=2))
    assert _refusal(vet_model, tmp_path, "candidate", "model.pt", None, 10).kind == "pickle"
    assert not marker.exists()


def test_sniff_refuses_a_torch_save_state_dict(tiny: TinyCNN, tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save(tiny.state_dict(), path)
    assert any(n.endswith("data.pkl") for n in zipfile.ZipFile(path).namelist())  # really the zip form
    err = _refusal(sniff, path, "model.pth", "model")
    assert err.kind == "pickle" and "torch.save" in err.message


def test_sniff_refuses_a_state_dict_renamed_to_pt2(tiny: TinyCNN, tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    torch.save(tiny.state_dict(), path)
    assert _refusal(sniff, path, "model.pt2", "model").kind == "pickle"


def test_sniff_recognises_a_git_lfs_pointer(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 12345\n"
    )
    err = _refusal(sniff, path, "model.onnx", "model")
    assert err.kind == "lfs"
    assert "Git LFS pointer" in err.message
    assert "git lfs pull" in str(err)


def test_sniff_refuses_an_unknown_file(tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"TFL3" + bytes(100))
    err = _refusal(sniff, path, "model.tflite", "model")
    assert err.kind == "format" and "ONNX" in err.hint


# --------------------------------------------------------------------------- vet_pt2


def vet_pt2(path: Path, relpath: str) -> None:
    pt2.vetted_program(path, relpath)


def _rewrite_zip(
    src: Path, dst: Path, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None
) -> Path:
    """Copy a zip member by member, replacing some members' bytes and adding others."""
    replace, add = replace or {}, add or {}
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w") as out:
        for info in archive.infolist():
            out.writestr(info, replace.get(info.filename, archive.read(info.filename)))
        for name, data in add.items():
            out.writestr(name, data)
    return dst


def _member(path: Path, suffix: str) -> str:
    return next(n for n in zipfile.ZipFile(path).namelist() if n.endswith(suffix))


def _pickled(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_vet_pt2_accepts_a_plain_exported_program(built: dict[str, Path], tmp_path: Path) -> None:
    vet_pt2(built["pt2"], "program.pt2")
    root = tmp_path / "sub"
    root.mkdir()
    (root / "program.pt2").write_bytes(built["pt2"].read_bytes())
    vetted = tmp_path / "vetted"
    vetted.mkdir()
    artifact = vet_model(root, "candidate", "program.pt2", None, 10, vetted=vetted)
    assert artifact.format == "pt2" and artifact.size_bytes == built["pt2"].stat().st_size
    assert artifact.ref.folder == "vetted" and (vetted / artifact.ref.path).is_file()  # the worker loads the rewrite


def test_vet_pt2_refuses_weights_flagged_use_pickle(built: dict[str, Path], tmp_path: Path) -> None:
    name = _member(built["pt2"], "/model_weights_config.json")
    config = json.loads(zipfile.ZipFile(built["pt2"]).read(name))
    assert config["config"]["conv1.weight"]["use_pickle"] is False  # the real layout, as torch writes it
    config["config"]["conv1.weight"]["use_pickle"] = True
    hostile = _rewrite_zip(built["pt2"], tmp_path / "program.pt2", replace={name: json.dumps(config).encode()})
    assert sniff(hostile, "program.pt2", "model") == "pt2"
    err = _refusal(vet_pt2, hostile, "program.pt2")
    assert err.kind == "pickle"
    assert "conv1.weight" in err.message and "unwrap_tensor_subclass" in err.hint


def test_vet_pt2_refuses_opaque_constants(built: dict[str, Path], tmp_path: Path) -> None:
    name = _member(built["pt2"], "/model_constants_config.json")
    table = {"config": {"obj": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False}}}
    hostile = _rewrite_zip(built["pt2"], tmp_path / "program.pt2", replace={name: json.dumps(table).encode()})
    assert _refusal(vet_pt2, hostile, "program.pt2").kind == "pickle"


def test_vet_pt2_refuses_pickled_weights_of_a_second_program(built: dict[str, Path], tmp_path: Path) -> None:
    """torch.export.load deserializes every program under models/, not only the one called 'model'."""
    archive = zipfile.ZipFile(built["pt2"])
    root = _member(built["pt2"], "/archive_format").rsplit("/", 1)[0]
    config = json.loads(archive.read(f"{root}/data/weights/model_weights_config.json"))
    config["config"]["conv1.weight"].update(use_pickle=True, path_name="evil_0")
    hostile = _rewrite_zip(
        built["pt2"],
        tmp_path / "program.pt2",
        add={
            f"{root}/models/evil.json": archive.read(f"{root}/models/model.json"),
            f"{root}/data/sample_inputs/evil.pt": archive.read(f"{root}/data/sample_inputs/model.pt"),
            f"{root}/data/weights/evil_weights_config.json": json.dumps(config).encode(),
            f"{root}/data/weights/evil_0": _pickled({"w": _TouchOnUnpickle(tmp_path / "PWNED")}),
            f"{root}/data/constants/evil_constants_config.json": b'{"config": {}}',
        },
    )
    assert _refusal(vet_pt2, hostile, "program.pt2").kind == "pickle"


def test_vet_pt2_refuses_the_legacy_pickled_weights_file(built: dict[str, Path], tmp_path: Path) -> None:
    """A data/weights/<name>.pt file is torch.load-ed with a weights_only=False fallback."""
    archive = zipfile.ZipFile(built["pt2"])
    root = _member(built["pt2"], "/archive_format").rsplit("/", 1)[0]
    hostile = _rewrite_zip(
        built["pt2"],
        tmp_path / "program.pt2",
        add={
            f"{root}/models/evil.json": archive.read(f"{root}/models/model.json"),
            f"{root}/data/sample_inputs/evil.pt": archive.read(f"{root}/data/sample_inputs/model.pt"),
            f"{root}/data/weights/evil.pt": _pickled({"w": _TouchOnUnpickle(tmp_path / "PWNED")}),
        },
    )
    err = _refusal(vet_pt2, hostile, "program.pt2")
    assert err.kind == "pickle" and "legacy" in err.message


def test_vet_pt2_refuses_a_malformed_weights_table(built: dict[str, Path], tmp_path: Path) -> None:
    name = _member(built["pt2"], "/model_weights_config.json")
    hostile = _rewrite_zip(built["pt2"], tmp_path / "program.pt2", replace={name: b'{"config": ["not", "a", "table"]}'})
    assert _refusal(vet_pt2, hostile, "program.pt2").kind == "pt2"


def test_vet_pt2_refuses_compiled_code(built: dict[str, Path], tmp_path: Path) -> None:
    root = _member(built["pt2"], "/archive_format").rsplit("/", 1)[0]
    library = {f"{root}/data/libkernel.so": b"\x7fELF" + bytes(64)}
    hostile = _rewrite_zip(built["pt2"], tmp_path / "program.pt2", add=library)
    err = _refusal(vet_pt2, hostile, "program.pt2")
    assert err.kind == "pt2"
    assert "compiled code" in err.message and "torch.export.save" in err.hint
    # and vet_model runs the same vetting for a .pt2 submission
    assert _refusal(vet_model, tmp_path, "candidate", "program.pt2", None, 10, vetted=tmp_path).kind == "pt2"


def test_a_torchscript_file_is_refused_with_how_to_export_instead(built: dict[str, Path]) -> None:
    """TorchScript is a program (aten::from_file, aten::save are ordinary TorchScript operators)."""
    root = built["torchscript"].parent
    err = _refusal(vet_model, root, "candidate", built["torchscript"].name, None, 10)
    assert err.kind == "format" and "TorchScript" in err.message
    assert "torch.export.save" in err.hint and "torch.onnx.export" in err.hint


# --------------------------------------------------------------------------- vet_model


def test_vet_model_accepts_onnx_and_hashes_it(built: dict[str, Path]) -> None:
    import hashlib

    root = built["onnx"].parent
    artifact = vet_model(root, "candidate", "model.onnx", None, 10)
    assert artifact.format == "onnx" and artifact.role == "candidate"
    assert artifact.sha256 == hashlib.sha256(built["onnx"].read_bytes()).hexdigest()
    assert artifact.extra_files == {}


def test_vet_model_refuses_a_model_over_the_size_limit(tmp_path: Path) -> None:
    (tmp_path / "big.onnx").write_bytes(bytes(3 * 2**20 // 2))  # 1.5 MiB
    err = _refusal(vet_model, tmp_path, "candidate", "big.onnx", None, 1)
    assert err.kind == "size"
    assert "1.5 MiB" in err.message and "1 MiB limit" in err.message


def test_vet_model_refuses_safetensors_without_an_architecture(built: dict[str, Path]) -> None:
    root = built["safetensors"].parent
    err = _refusal(vet_model, root, "candidate", "weights.safetensors", None, 10)
    assert err.kind == "manifest"
    assert "architecture" in err.message and "architecture:" in err.hint
    artifact = vet_model(root, "candidate", "weights.safetensors", "digits-cnn", 10)
    assert artifact.format == "safetensors" and artifact.architecture == "digits-cnn"


def test_vet_model_refuses_an_npz_as_a_model(built: dict[str, Path]) -> None:
    assert _refusal(vet_model, built["npz"].parent, "candidate", "inputs.npz", None, 10).kind == "format"


@pytest.fixture()
def external_onnx(built: dict[str, Path], tmp_path: Path) -> Path:
    """The exported model re-saved with its weights in an external file next to it."""
    root = tmp_path / "submission"
    root.mkdir()
    proto = onnx.load(str(built["onnx"]))
    onnx.save_model(
        proto, str(root / "model.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    assert (root / "weights.bin").stat().st_size > 40_000
    return root / "model.onnx"


def _relocate_external_data(path: Path, location: str) -> None:
    proto = onnx.load_model(str(path), load_external_data=False)
    moved = 0
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
                moved += 1
    assert moved
    onnx.save_model(proto, str(path))


def test_vet_model_hashes_onnx_external_data(external_onnx: Path) -> None:
    import hashlib

    artifact = vet_model(external_onnx.parent, "candidate", "model.onnx", None, 10)
    digest = hashlib.sha256((external_onnx.parent / "weights.bin").read_bytes()).hexdigest()
    assert artifact.extra_files == {"weights.bin": digest}


def test_vet_model_refuses_onnx_external_data_outside_the_folder(external_onnx: Path) -> None:
    outside = external_onnx.parent.parent / "outside.bin"
    outside.write_bytes((external_onnx.parent / "weights.bin").read_bytes())  # it exists: only the path is wrong
    _relocate_external_data(external_onnx, "../outside.bin")
    err = _refusal(vet_model, external_onnx.parent, "candidate", "model.onnx", None, 10)
    assert err.kind == "path"
    assert "external data of 'model.onnx'" in err.message and "../outside.bin" in err.message


def test_vet_model_refuses_onnx_external_data_at_an_absolute_path(external_onnx: Path) -> None:
    _relocate_external_data(external_onnx, str(external_onnx.parent / "weights.bin"))
    assert _refusal(vet_model, external_onnx.parent, "candidate", "model.onnx", None, 10).kind == "path"


def test_vet_model_refuses_missing_onnx_external_data(external_onnx: Path) -> None:
    (external_onnx.parent / "weights.bin").unlink()
    assert _refusal(vet_model, external_onnx.parent, "candidate", "model.onnx", None, 10).kind == "missing"


def test_vet_model_refuses_oversized_onnx_external_data(external_onnx: Path) -> None:
    with open(external_onnx.parent / "weights.bin", "ab") as handle:
        handle.write(bytes(2 * 2**20))
    assert external_onnx.stat().st_size < 2**20  # the model file alone is within the limit
    assert _refusal(vet_model, external_onnx.parent, "candidate", "model.onnx", None, 1).kind == "size"
