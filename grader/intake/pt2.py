"""``.pt2`` archives (``torch.export.save``), vetted as data and rewritten so that torch reads
exactly the bytes that were vetted.

A submitted archive is never handed to ``torch.export.load`` as it is. Here, without torch:

- the zip is read the way torch's own reader reads it (every entry under the first entry's
  folder, found by name); duplicate names, entries outside that folder, unsafe names and any
  entry a ``torch.export.save`` does not write are refused, so there is no second copy of a
  name for another reader to prefer;
- the weights and constants tables must store plain tensors (no ``use_pickle``, no custom or
  opaque objects), each naming an entry that exists;
- the serialized program (``models/<name>.json``) is walked whole: every operator a node (or a
  subgraph's node) calls must be an allowlisted tensor operator (no file, process, storage or
  Python-level function), every symbolic expression the deserializer will hand to sympy must be
  built only of numbers, symbol names and a few arithmetic functions, and guard code (which
  ``ExportedProgram.module()`` executes) is dropped;
- the sample inputs (a ``torch.save`` pickle) are unpickled by a restricted unpickler that only
  knows how to rebuild tensors, so nothing in them can name a callable;

and the archive the worker loads is written anew from the vetted entries (``repack``).
"""

from __future__ import annotations

import io
import json
import pickle
import re
import tokenize
import zipfile
from pathlib import Path, PurePosixPath

from grader.errors import SubmissionError

KNOWN_ENTRY = re.compile(
    r"^(archive_format|archive_version|byteorder|version|\.data/[A-Za-z0-9_.]+|models/[A-Za-z0-9_]+\.json"
    r"|data/(weights|constants)/[A-Za-z0-9_.]+|data/sample_inputs/[A-Za-z0-9_]+\.pt|extra/[A-Za-z0-9_.-]+)$"
)
OPERATOR = re.compile(
    r"^torch\.ops\.(aten|prims|quantized_decomposed|quantized|higher_order)\.[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?$"
)
PYTHON_TARGETS = {
    "_operator.getitem",
    "_operator.add",
    "_operator.sub",
    "_operator.mul",
    "_operator.floordiv",
    "_operator.truediv",
    "_operator.mod",
    "_operator.neg",
    "_operator.eq",
    "_operator.ne",
    "_operator.lt",
    "_operator.le",
    "_operator.gt",
    "_operator.ge",
    "math.ceil",
    "math.floor",
    "math.trunc",
    "torch.sym_int",
    "torch.sym_float",
    "torch.sym_max",
    "torch.sym_min",
    "torch.sym_not",
    "torch.sym_sqrt",
    "torch.sym_ite",
    "torch._sym_sqrt",
    "torch.sym_sum",
}
# operators that reach outside the tensor world: files, storages, the Python interpreter
DENIED_OPERATORS = re.compile(r"^torch\.ops\.aten\.(from_file|save|_print|set_|set|_set_[a-z_]*)(\.|$)")
HIGHER_ORDER = {
    "cond",
    "while_loop",
    "map_impl",
    "wrap_with_set_grad_enabled",
    "wrap_with_autocast",
    "auto_functionalized",
    "auto_functionalized_v2",
    "invoke_subgraph",
    "scan",
}
EXPRESSION_NAMES = {
    "Symbol",
    "Integer",
    "Float",
    "Rational",
    "True",
    "False",
    "Max",
    "Min",
    "Mod",
    "FloorDiv",
    "ModularIndexing",
    "Where",
    "PythonMod",
    "CleanDiv",
    "CeilToInt",
    "FloorToInt",
    "CeilDiv",
    "IntTrueDiv",
    "FloatTrueDiv",
    "ToFloat",
    "TruncToInt",
    "Abs",
    "floor",
    "ceiling",
    "sqrt",
    "Eq",
    "Ne",
    "Lt",
    "Le",
    "Gt",
    "Ge",
    "And",
    "Or",
    "Not",
    "Piecewise",
    "oo",
    "positive",
    "integer",
    "nonnegative",
    "negative",
    "real",
    "finite",
}
EXPRESSION_OPS = {"+", "-", "*", "/", "//", "%", "**", "(", ")", ",", "=", "<", ">", "<=", ">=", "==", "!="}
SYMBOL_NAME = re.compile(r"^[a-z]+[0-9]+$")
SAFE_STRING = re.compile(r"^'[A-Za-z][A-Za-z0-9_]*'$")
TENSOR_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("collections", "OrderedDict"),
    ("torch", "Size"),
    ("torch", "device"),
    ("builtins", "set"),
}
STORAGES = re.compile(r"^(Float|Double|Half|BFloat16|Long|Int|Short|Char|Byte|Bool|ComplexFloat|ComplexDouble)Storage$")
HINT = "Save the plain exported program: torch.export.save(torch.export.export(model.eval(), (example,)), 'model.pt2')."


def refuse(relpath: str, what: str, hint: str = HINT, kind: str = "pt2") -> SubmissionError:
    return SubmissionError(f"'{relpath}' {what}", hint, kind=kind)


def archive_entries(path: Path, relpath: str) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    """The archive's folder and its entries by name, as torch's reader finds them, or a refusal."""
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    if not infos:
        raise refuse(relpath, "is an empty archive.")
    prefix = infos[0].filename.split("/", 1)[0]
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        pure = PurePosixPath(name)
        if "\\" in name or "\0" in name or pure.is_absolute() or ".." in pure.parts:
            raise refuse(relpath, f"holds an entry with an unsafe name ({name!r}).")
        if name.endswith("/"):
            continue
        if not name.startswith(prefix + "/"):
            raise refuse(
                relpath,
                f"holds entries under two folders ({prefix!r} and {name.split('/')[0]!r}); "
                "torch would read only the first.",
            )
        inner = name[len(prefix) + 1 :]
        if inner in entries:
            raise refuse(relpath, f"holds the entry '{name}' twice; a reader could take either copy.")
        if inner.endswith((".so", ".dll", ".dylib", ".cubin")) or "aotinductor" in inner:
            raise refuse(relpath, "contains compiled code (an AOTInductor package).")
        if re.match(r"^data/(weights|constants)/.*\.pt$", inner):
            raise SubmissionError(
                f"'{relpath}' stores its weights in the legacy pickled layout ('{name}'); the grader refuses "
                "pickled entries because loading them can run code.",
                "Re-save the program with a current torch: torch.export.save(ep, 'model.pt2').",
                kind="pickle",
            )
        if not KNOWN_ENTRY.match(inner):
            raise refuse(relpath, f"holds an entry that torch.export.save does not write ('{name}').")
        entries[inner] = info
    for required in ("archive_format", "byteorder"):
        if required not in entries:
            raise refuse(relpath, f"is not a torch.export program (no '{required}').")
    return prefix, entries


def vetted_program(path: Path, relpath: str) -> tuple[str, list[tuple[str, bytes]]]:
    """(folder, [(entry, bytes)]) of the archive as it will be rewritten: every entry checked."""
    prefix, entries = archive_entries(path, relpath)
    out: list[tuple[str, bytes]] = []
    with zipfile.ZipFile(path) as archive:
        if archive.read(entries["archive_format"]) != b"pt2":
            raise refuse(relpath, "is not a torch.export program (its archive_format is not 'pt2').")
        for inner, info in entries.items():
            data = archive.read(info)
            if inner.startswith("models/"):
                data = vetted_program_json(data, relpath, inner)
            elif inner.endswith(("_weights_config.json", "_constants_config.json")):
                vet_payload_table(data, relpath, inner, entries)
            elif inner.startswith("data/sample_inputs/"):
                vet_tensor_pickle(data, relpath, inner)
            out.append((inner, data))
    if not any(inner.startswith("models/") for inner, _ in out):
        raise refuse(relpath, "holds no exported program (no models/<name>.json).")
    return prefix, out


def repack(prefix: str, entries: list[tuple[str, bytes]], target: Path) -> Path:
    """A fresh archive of exactly the vetted entries (stored, in their order): what the worker loads."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for inner, data in entries:
            archive.writestr(zipfile.ZipInfo(f"{prefix}/{inner}", date_time=(1980, 1, 1, 0, 0, 0)), data)
    target.chmod(0o644)
    return target


def vet_payload_table(raw: bytes, relpath: str, inner: str, entries: dict[str, zipfile.ZipInfo]) -> None:
    try:
        config = json.loads(raw).get("config", {})
    except (ValueError, AttributeError, RecursionError):
        config = None
    if not isinstance(config, dict) or not all(isinstance(meta, dict) for meta in config.values()):
        raise refuse(relpath, "has an unreadable weights table.", "Re-save it.")
    folder = inner.rsplit("/", 1)[0]
    for fqn, meta in config.items():
        path_name = str(meta.get("path_name", ""))
        if meta.get("use_pickle") or path_name.startswith(("custom_obj", "opaque_obj")):
            raise SubmissionError(
                f"'{relpath}' stores '{fqn}' as a pickle (a tensor subclass or custom object); the "
                "grader refuses pickled entries because loading them can run code.",
                "Unwrap tensor subclasses before export (e.g. torchao's unwrap_tensor_subclass) so the "
                "weights are plain tensors, or export to ONNX.",
                kind="pickle",
            )
        if f"{folder}/{path_name}" not in entries or not isinstance(meta.get("tensor_meta"), dict):
            raise refuse(relpath, f"names a weight '{fqn}' whose data is missing.", "Re-save it.")


def vetted_program_json(raw: bytes, relpath: str, inner: str) -> bytes:
    """The serialized program with every operator and expression checked, and guard code dropped."""
    try:
        program = json.loads(raw)
    except (ValueError, RecursionError):
        raise refuse(relpath, f"has an unreadable program ('{inner}').", "Re-save it.") from None
    if not isinstance(program, dict):
        raise refuse(relpath, f"has an unreadable program ('{inner}').", "Re-save it.")
    _walk(program, relpath)
    for key in program.get("range_constraints") or {}:
        _check_expression(str(key), relpath)
    program["guards_code"] = []  # ExportedProgram.module() would exec these strings
    return json.dumps(program).encode()


def _walk(value: object, relpath: str, depth: int = 0) -> None:
    if depth > 400:
        raise refuse(relpath, "has a program nested too deeply to be a model.")
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "target" and isinstance(item, str):
                _check_target(item, relpath)
            elif key in ("as_operator",) and isinstance(item, str):
                _check_target(item, relpath)
            elif key == "expr_str" and isinstance(item, str):
                _check_expression(item, relpath)
            elif key in ("in_spec", "out_spec") and isinstance(item, str):
                check_treespec(item, relpath)
            elif key in ("as_custom_obj", "as_custom_objs"):
                raise refuse(relpath, "calls a custom (scripted) object; the grader runs plain tensor operators only.")
            _walk(item, relpath, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _walk(item, relpath, depth + 1)


# pytree node types a program's input and output specs may name: the containers torch.export
# writes for plain tensors. Anything else (a namedtuple, a defaultdict, a registered class) makes
# torch's deserializer import modules by name, and a context that is a JSON object goes through
# an object hook that imports a module and walks attributes by name (``__enum__``).
PYTREE_TYPES = {
    None,
    "builtins.tuple",
    "builtins.list",
    "builtins.dict",
    "collections.OrderedDict",
    "torch.fx.immutable_collections.immutable_list",
    "torch.fx.immutable_collections.immutable_dict",
}


def check_treespec(serialized: str, relpath: str) -> None:
    """An input or output spec: protocol 1, containers only, contexts of plain JSON values."""
    bad = refuse(relpath, "describes its inputs or outputs with something other than plain containers of tensors.")
    try:
        protocol, schema = json.loads(serialized)
    except (ValueError, TypeError, RecursionError):
        raise bad from None
    if protocol != 1:
        raise bad
    stack = [(schema, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > 64 or not isinstance(node, dict) or set(node) != {"type", "context", "children_spec"}:
            raise bad
        if node["type"] not in PYTREE_TYPES or not isinstance(node["children_spec"], list):
            raise bad
        context = node["context"]
        if context is not None:
            try:
                if not isinstance(context, str) or not _plain_json(json.loads(context)):
                    raise bad
            except (ValueError, RecursionError):
                raise bad from None
        stack.extend((child, depth + 1) for child in node["children_spec"])


def _plain_json(value: object, depth: int = 0) -> bool:
    """Numbers, strings, booleans, null and lists of them: no JSON object anywhere."""
    if depth > 32:
        return False
    if isinstance(value, list):
        return all(_plain_json(v, depth + 1) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _check_target(target: str, relpath: str) -> None:
    if target in PYTHON_TARGETS:
        return
    if OPERATOR.match(target) and not DENIED_OPERATORS.match(target):
        namespace, _, rest = target.removeprefix("torch.ops.").partition(".")
        if namespace != "higher_order" or rest.split(".")[0] in HIGHER_ORDER:
            return
    raise refuse(
        relpath,
        f"calls '{target[:120]}', which is not a plain tensor operator; the grader runs only "
        "those (no files, processes or Python functions).",
    )


def _check_expression(expression: str, relpath: str) -> None:
    """A symbolic shape expression the deserializer passes to sympy (which evaluates it): only
    numbers, symbol names, a few arithmetic functions and operators."""
    if len(expression) > 2000:
        raise refuse(relpath, "holds a symbolic shape expression too long to be one.")
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expression).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        raise refuse(relpath, "holds a malformed symbolic shape expression.") from None
    for token in tokens:
        if token.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        text = token.string
        ok = (
            (token.type == tokenize.NAME and (text in EXPRESSION_NAMES or SYMBOL_NAME.match(text)))
            or token.type == tokenize.NUMBER
            or (token.type == tokenize.STRING and SAFE_STRING.match(text))
            or (token.type == tokenize.OP and text in EXPRESSION_OPS)
        )
        if not ok:
            raise refuse(relpath, f"holds a symbolic shape expression the grader will not evaluate ({text[:40]!r}).")


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Knows how to name the few things a tensor's pickle names, and nothing else."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in TENSOR_GLOBALS or (module == "torch" and STORAGES.match(name)):
            return _Placeholder
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid: object) -> object:
        return _Placeholder()


class _Placeholder:
    """Stands for a tensor, storage or dict the real unpickler would build: no code, any arguments."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass


def vet_tensor_pickle(raw: bytes, relpath: str, inner: str) -> None:
    """A ``torch.save`` archive (the sample inputs) whose pickle rebuilds tensors and nothing else.

    It must be a zip from its first byte: with anything in front, Python's zipfile still finds the
    archive at the end, but torch reads the front as a legacy pickle."""
    if not raw.startswith(b"PK\x03\x04"):
        raise refuse(relpath, f"has sample inputs ('{inner}') that are not a torch.save zip archive.")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as saved:
            pickles = [n for n in saved.namelist() if n.endswith("data.pkl")]
            offsets = [info.header_offset for info in saved.infolist()]
            if not offsets or min(offsets) != 0:
                raise refuse(relpath, f"has sample inputs ('{inner}') that are not a torch.save zip archive.")
            if len(pickles) != 1 or len(set(saved.namelist())) != len(saved.namelist()):
                raise refuse(relpath, f"has sample inputs ('{inner}') that are not one torch.save archive.")
            _TensorOnlyUnpickler(io.BytesIO(saved.read(pickles[0]))).load()
    except SubmissionError:
        raise
    except (
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        RecursionError,
    ) as exc:
        raise SubmissionError(
            f"'{relpath}' has sample inputs ('{inner}') that are not plain tensors ({type(exc).__name__}: "
            f"{str(exc)[:120]}); refused because loading them would unpickle arbitrary objects.",
            HINT,
            kind="pickle",
        ) from None
