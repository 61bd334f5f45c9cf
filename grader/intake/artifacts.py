"""Open nothing that could run: resolve, sniff and vet every student file before any loader sees it.

Trust boundary 1 lives here. A path may not leave the submission folder (no ``..``, no absolute
path, no symbolic link anywhere on the way); a file is classified by its bytes, not its name; a
pickle is refused before any unpickler touches it; a Git LFS pointer is recognised; TorchScript
(a program, whose operators can read and write files) is refused with how to export instead;
``.pt2`` archives are vetted entry by entry and rewritten (``grader.intake.pt2``); ONNX external
data must stay inside the folder. Nothing in this module imports torch. It parses untrusted
files, so the pipeline runs it in a limited child process (``grader.intake.isolated``).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import shutil
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from grader.contracts.job import FileRef, Folder
from grader.contracts.lfs import PREFIXES as LFS_PREFIXES
from grader.errors import SubmissionError
from grader.intake import pt2
from grader.intake.stored import StoredTensor, onnx_stored, pt2_stored, safetensors_stored

TORCHSCRIPT_HINT = (
    "Export the model instead: torch.export.save(torch.export.export(model.eval(), (example,)), 'model.pt2') "
    "or torch.onnx.export(model, (example,), 'model.onnx'). For torch.ao dynamic quantization, export the float "
    "model to ONNX and quantize it with onnxruntime.quantization.quantize_dynamic."
)
SAFE_FORMATS_HINT = (
    "Save the model as ONNX (torch.onnx.export), a torch.export program (torch.export.save, .pt2) "
    "or safetensors weights plus an 'architecture' name."
)
PICKLE_PROTOCOL_BYTES = {b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"}
MAX_ZIP_RATIO = 200  # uncompressed / compressed; more looks like a zip bomb


@dataclass(frozen=True)
class Artifact:
    """A vetted model or data file: where it is, what it is, and what it weighs.

    ``size_bytes`` and ``gzip_bytes`` count every file the model is made of (an ONNX file and its
    external data together), measured here on the host from the files themselves. ``folder`` and
    ``load_path`` say where the worker reads it: a copy of the vetted file in the ``vetted`` folder
    (``stage``), or for a ``.pt2`` the archive rewritten from its vetted entries.
    """

    role: str
    path: Path
    relpath: str
    format: str  # onnx | safetensors | pt2 | npz | sqlite | csv | json
    size_bytes: int
    sha256: str
    architecture: str | None = None
    extra_files: dict[str, str] = field(default_factory=dict)  # relpath -> sha256 (ONNX external data)
    folder: Folder = "submission"  # the folder the worker reads it from, as the job names it
    load_path: str = ""  # its path inside that folder (default: relpath)
    gzip_bytes: int = 0
    files: dict[str, int] = field(default_factory=dict)  # every file counted in size_bytes: relpath -> bytes
    stored: dict[str, list] = field(default_factory=dict)  # tensor name -> StoredTensor.to_json(), from metadata

    @property
    def ref(self) -> FileRef:
        inside = self.load_path or PurePosixPath(self.relpath.replace("\\", "/")).as_posix()
        return FileRef(folder=self.folder, path=inside)

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "path": str(self.path)}

    @classmethod
    def from_json(cls, data: dict) -> Artifact:
        return cls(**{**data, "path": Path(data["path"])})


def stage(artifacts: list[Artifact], root: Path, vetted: Path) -> list[Artifact]:
    """Copies of exactly the files that were vetted, in ``vetted/files`` where the worker reads them.

    The submission folder itself is never mounted into the sandbox: a file the manifest does not
    name (a shared library, another team's model) never reaches the worker, and what the worker
    reads is byte for byte what was vetted and hashed here.
    """
    staged = []
    for artifact in artifacts:
        if artifact.folder != "submission":
            staged.append(artifact)
            continue
        for relpath in {artifact.relpath: 0, **artifact.files}:
            inside = PurePosixPath(relpath.replace("\\", "/"))
            target = vetted / "files" / inside
            for parent in reversed(target.parents):
                if vetted in parent.parents and not parent.exists():
                    parent.mkdir(mode=0o755)
            shutil.copyfile(resolve_inside(root, relpath, "file"), target)
            target.chmod(0o644)
        load = PurePosixPath("files") / PurePosixPath(artifact.relpath.replace("\\", "/"))
        staged.append(dataclasses.replace(artifact, folder="vetted", load_path=load.as_posix()))
    return staged


def resolve_inside(root: Path, relpath: str, what: str) -> Path:
    """Resolve ``relpath`` under ``root`` or refuse: no absolute paths, ``..`` or symlinks."""
    pure = PurePosixPath(relpath.replace("\\", "/"))
    if pure.is_absolute() or relpath.startswith(("/", "\\")) or (len(relpath) > 1 and relpath[1] == ":"):
        raise SubmissionError(
            f"{what} path '{relpath}' is absolute.",
            "Use a path relative to your submission folder, e.g. model.onnx.",
            kind="path",
        )
    if any(part == ".." for part in pure.parts):
        raise SubmissionError(
            f"{what} path '{relpath}' leaves the submission folder ('..').",
            "Put the file inside your submission folder and name it relative to it.",
            kind="path",
        )
    root = root.resolve()
    current = root
    for part in pure.parts:
        current = current / part
        if current.is_symlink():
            raise SubmissionError(
                f"{what} path '{relpath}' goes through a symbolic link.",
                "Commit the real file, not a link to it.",
                kind="path",
            )
    if not current.exists():
        raise SubmissionError(
            f"{what} file '{relpath}' does not exist in the submission folder.",
            "Check the file name in submission.yaml and that the file is committed (git add).",
            kind="missing",
        )
    if not current.is_file():
        raise SubmissionError(f"{what} path '{relpath}' is not a regular file.", "Name a file.", kind="path")
    if root not in current.resolve().parents:
        raise SubmissionError(f"{what} path '{relpath}' leaves the submission folder.", "", kind="path")
    return current


def gzip_size(paths: list[Path]) -> int:
    """Size after gzip -6 of the files one after the other: what entropy coding of the stored
    weights would give, for a model made of several files. Streamed into a byte counter, so a
    large model is never held in memory."""
    sink = _ByteCounter()
    with gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0) as out:  # type: ignore[arg-type]
        for path in paths:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):  # noqa: B023 - read in this iteration
                    out.write(block)
    return sink.count


class _ByteCounter:
    """A write-only sink that counts bytes."""

    def __init__(self) -> None:
        self.count = 0

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _refuse_pickle(relpath: str, what: str) -> SubmissionError:
    return SubmissionError(
        f"{what} '{relpath}' is a Python pickle (torch.save / pickle.dump). Pickles can run any code "
        "when loaded, so the grader never opens them; nothing in the file was executed.",
        SAFE_FORMATS_HINT,
        kind="pickle",
    )


def sniff(path: Path, relpath: str, what: str) -> str:
    """Classify a file by its content; refuse pickles and LFS pointers outright."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(LFS_PREFIXES):
        raise SubmissionError(
            f"{what} '{relpath}' is a Git LFS pointer, not the file itself.",
            "Run 'git lfs pull' (or enable LFS in the checkout: actions/checkout with lfs: true) "
            "so the real file is present, or commit the file without LFS if it is small.",
            kind="lfs",
        )
    if head[:2] in PICKLE_PROTOCOL_BYTES:
        raise _refuse_pickle(relpath, what)
    if zipfile.is_zipfile(path):
        return _classify_zip(path, relpath, what)
    if _looks_like_safetensors(path, head):
        return "safetensors"
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if path.suffix.lower() in {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib"}:
        raise _refuse_pickle(relpath, what)
    raise SubmissionError(f"{what} '{relpath}' is not a format the grader can read.", SAFE_FORMATS_HINT, kind="format")


def _looks_like_safetensors(path: Path, head: bytes) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= min(100_000_000, path.stat().st_size - 8) and head[8:9] == b"{"


def _zip_names(path: Path) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(path) as archive:
        return archive.infolist()


def _classify_zip(path: Path, relpath: str, what: str) -> str:
    infos = _zip_names(path)
    names = [info.filename for info in infos]
    compressed = sum(i.compress_size for i in infos) or 1
    if sum(i.file_size for i in infos) / compressed > MAX_ZIP_RATIO:
        raise SubmissionError(f"{what} '{relpath}' expands suspiciously (zip bomb?).", "", kind="format")
    if any(n.endswith("/archive_format") for n in names):
        return "pt2"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    if any(n.endswith("data.pkl") for n in names):
        raise _refuse_pickle(relpath, what)
    raise SubmissionError(f"{what} '{relpath}' is a zip the grader does not recognise.", SAFE_FORMATS_HINT, "format")


def onnx_external_files(
    path: Path, root: Path, relpath: str, check: Callable[[Path, str], None] = lambda _p, _r: None
) -> dict[str, Path]:
    """External-data files an ONNX model names, each vetted to lie inside the submission, to pass
    ``check`` (the size limit), and to hold nothing but the model's tensors."""
    import onnx  # local: parsing protobuf is data, but keep the CLI's import cheap

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the student's file
        raise SubmissionError(
            f"'{relpath}' is not a readable ONNX model ({type(exc).__name__}).",
            "Re-export it with torch.onnx.export and check it with onnx.checker.check_model.",
            kind="format",
        ) from None
    found: dict[str, Path] = {}
    ranges: dict[str, list[tuple[int, int]]] = {}
    base = PurePosixPath(relpath).parent
    for tensor in _all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e.value for e in tensor.external_data}
        location = entries.get("location", "")
        target = str(base / location) if str(base) != "." else location
        found[target] = resolve_inside(root, target, f"external data of '{relpath}'")
        ranges.setdefault(target, []).append(_byte_range(entries))
    for target, spans in ranges.items():
        check(found[target], target)
        _check_fully_used(found[target], target, relpath, spans)
    return found


ALIGNMENT_SLACK = 64 * 1024  # bytes between or after tensors an exporter may leave for alignment


def _byte_range(entries: dict[str, str]) -> tuple[int, int]:
    try:
        offset = int(entries.get("offset", "0") or 0)
        length = int(entries["length"]) if entries.get("length") else -1
    except ValueError:
        return 0, -1
    return offset, length


def _check_fully_used(path: Path, target: str, relpath: str, spans: list[tuple[int, int]]) -> None:
    """An external-data file must hold the model's tensors and (alignment aside) nothing else:
    bytes no tensor reads would count towards the model's size, and a baseline padded with them
    would make any candidate look smaller."""
    if any(length < 0 for _, length in spans):
        return  # a tensor without a length reads to the end of the file: nothing is unused
    size = path.stat().st_size
    used, end = 0, 0
    for offset, length in sorted(spans):
        start = max(offset, end)
        used += max(0, offset + length - start)
        end = max(end, offset + length)
    unused = size - min(used, size)
    if unused > max(ALIGNMENT_SLACK, 0.01 * size):
        raise SubmissionError(
            f"'{target}', the external data of '{relpath}', holds {unused:,} bytes that no tensor of the "
            "model uses; the grader counts a model's size from its files, so they must hold only the model.",
            "Save the model again so the data file holds only its tensors: onnx.save_model(onnx.load(path), "
            "path, save_as_external_data=True, location=...) writes a fresh one (or torch.onnx.export again).",
            kind="format",
        )


def _all_tensors(model):  # noqa: ANN001, ANN202 - onnx types are imported lazily
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(model)


def vet_model(
    root: Path,
    role: str,
    relpath: str,
    architecture: str | None,
    limit_mb: int,
    folder: Folder = "submission",
    vetted: Path | None = None,
) -> Artifact:
    """Everything the host can prove about a model file without running anything.

    A ``.pt2`` is rewritten from its vetted entries into ``vetted`` (required for one), and the
    worker loads that copy. Sizes count the file and every external-data file it names.
    """
    what = f"model '{role}'"
    path = resolve_inside(root, relpath, what)
    _check_size(path, relpath, what, limit_mb)
    fmt = sniff(path, relpath, what)
    extra: dict[str, str] = {}
    stored: dict[str, StoredTensor] = {}
    files = {relpath: path.stat().st_size}
    parts = [path]
    load_folder, load_path = folder, ""
    if fmt == "npz":
        raise SubmissionError(f"{what} '{relpath}' is a NumPy archive, not a model.", SAFE_FORMATS_HINT, "format")
    if fmt == "torchscript":
        raise SubmissionError(
            f"{what} '{relpath}' is TorchScript (torch.jit.save). A TorchScript file is a program, and its "
            "operators can read and write files, so the grader does not run TorchScript any more.",
            TORCHSCRIPT_HINT,
            kind="format",
        )
    if fmt == "pt2":
        if vetted is None:
            raise SubmissionError(
                f"{what} '{relpath}' is a .pt2 program, which this role does not accept.",
                SAFE_FORMATS_HINT,
                kind="format",
            )
        prefix, entries = pt2.vetted_program(path, relpath)
        load_path = pt2.repack(prefix, entries, vetted / f"{role}.pt2").name
        load_folder = "vetted"
        stored = pt2_stored(entries)
    if fmt == "onnx":
        stored = onnx_stored(path)
        within_limit = lambda ext_path, ext_rel: _check_size(ext_path, ext_rel, what, limit_mb)  # noqa: E731
        for ext_rel, ext_path in onnx_external_files(path, root, relpath, within_limit).items():
            extra[ext_rel] = sha256_file(ext_path)
            files[ext_rel] = ext_path.stat().st_size
            parts.append(ext_path)
    if fmt == "safetensors":
        stored = safetensors_stored(path)
    if fmt == "safetensors" and not architecture:
        raise SubmissionError(
            f"{what} '{relpath}' holds only weights (safetensors); the grader needs the architecture.",
            "Add 'architecture: <name>' to the model entry, e.g. candidate: {path: m.safetensors, "
            "architecture: digits-cnn}.",
            kind="manifest",
        )
    return Artifact(
        role,
        path,
        relpath,
        fmt,
        sum(files.values()),
        sha256_file(path),
        architecture,
        extra,
        load_folder,
        load_path,
        gzip_size(parts),
        files,
        {name: tensor.to_json() for name, tensor in stored.items()},
    )


def vet_inputs(root: Path, relpath: str, limit_mb: int) -> Artifact:
    what = "inputs"
    path = resolve_inside(root, relpath, what)
    _check_size(path, relpath, what, limit_mb)
    fmt = sniff(path, relpath, what)
    if fmt != "npz":
        raise SubmissionError(
            f"inputs '{relpath}' must be a NumPy .npz archive (np.savez) of plain arrays.",
            "Save them with np.savez('inputs.npz', input=x, labels=y); object arrays are refused.",
            kind="format",
        )
    return Artifact(
        "inputs", path, relpath, fmt, path.stat().st_size, sha256_file(path), files={relpath: path.stat().st_size}
    )


def _check_size(path: Path, relpath: str, what: str, limit_mb: int) -> None:
    size = path.stat().st_size
    if size > limit_mb * 1024 * 1024:
        raise SubmissionError(
            f"{what} '{relpath}' is {size / 2**20:.1f} MiB, over the {limit_mb} MiB limit.",
            "Compress the model further or ask staff about the limit.",
            kind="size",
        )


SQLITE_HEADER = b"SQLite format 3\x00"


def vet_search_log(root: Path, relpath: str, limit_mb: int) -> Artifact:
    """A search log (hw5): an Optuna SQLite study, or its trial table as CSV or JSON; nothing else.

    Classified by content; its rows are parsed later, inside the sandbox, as hostile data.
    """
    what = "search log"
    path = resolve_inside(root, relpath, what)
    _check_size(path, relpath, what, limit_mb)
    with open(path, "rb") as handle:
        head = handle.read(64)
    if head.startswith(LFS_PREFIXES) or head[:2] in PICKLE_PROTOCOL_BYTES:
        sniff(path, relpath, what)  # raises the LFS / pickle message
    if head.startswith(SQLITE_HEADER):
        fmt = "sqlite"
    elif head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"[", b"{"):
        fmt = "json"
    elif path.suffix.lower() == ".csv" and b"\x00" not in head:
        fmt = "csv"
    else:
        raise SubmissionError(
            f"search log '{relpath}' is neither an SQLite study, a CSV file nor JSON.",
            "Save the Optuna study with storage='sqlite:///study.db', or export "
            "study.trials_dataframe() with .to_csv('trials.csv') or .to_json('trials.json', orient='records').",
            kind="format",
        )
    return Artifact(
        "search_log", path, relpath, fmt, path.stat().st_size, sha256_file(path), files={relpath: path.stat().st_size}
    )
