"""What a model file stores, read on the host from its metadata alone: every stored tensor's name,
type and element count.

The worker's evidence (which weights are quantized, to how many bits, how many parameters) is
reported from inside the sandbox, so the host holds it against these facts
(``grader.grading.crosscheck``): a weight read as int8 must be stored as integers of <= 8 bits, a
weight must be a tensor the file stores, and no model has more parameters than its file holds.
Nothing is decoded or run here; ONNX is parsed without its external data, a ``.pt2`` is read from
its vetted weights table, safetensors from its header.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_TENSORS = 200_000


@dataclass(frozen=True)
class StoredTensor:
    dtype: str
    bits: int
    numel: int

    @property
    def low_bit(self) -> bool:
        """An integer of <= 8 bits: what quantized codes are stored as (uint8 also packs 4-bit codes)."""
        return self.bits <= 8 and self.dtype not in ("bool", "float8")

    def to_json(self) -> list:
        return [self.dtype, self.bits, self.numel]

    @classmethod
    def from_json(cls, item: list) -> StoredTensor:
        return cls(str(item[0]), int(item[1]), int(item[2]))


# torch.export's serialized ScalarType codes (torch/_export/serde/schema.py)
PT2_DTYPES = {
    1: ("uint8", 8),
    2: ("int8", 8),
    3: ("int16", 16),
    4: ("int32", 32),
    5: ("int64", 64),
    6: ("float16", 16),
    7: ("float32", 32),
    8: ("float64", 64),
    12: ("bool", 8),
    13: ("bfloat16", 16),
}
SAFETENSORS_DTYPES = {
    "U8": ("uint8", 8),
    "I8": ("int8", 8),
    "I16": ("int16", 16),
    "I32": ("int32", 32),
    "I64": ("int64", 64),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "F32": ("float32", 32),
    "F64": ("float64", 64),
    "BOOL": ("bool", 8),
}


def onnx_stored(path: Path) -> dict[str, StoredTensor]:
    import onnx
    from onnx import helper

    model = onnx.load_model(str(path), load_external_data=False)
    found: dict[str, StoredTensor] = {}

    def add(tensor: onnx.TensorProto, name: str) -> None:
        numel = 1
        for dim in tensor.dims:
            numel *= int(dim)
        if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            dtype, bits = ("int4" if tensor.data_type == onnx.TensorProto.INT4 else "uint4"), 4
        else:
            try:
                np_type = helper.tensor_dtype_to_np_dtype(tensor.data_type)
                dtype, bits = str(np_type), np_type.itemsize * 8
            except (KeyError, ValueError, TypeError):
                dtype, bits = "unknown", 32
        if len(found) < MAX_TENSORS:
            found[name] = StoredTensor(dtype, bits, numel)

    def walk(graph: onnx.GraphProto) -> None:
        for tensor in graph.initializer:
            add(tensor, tensor.name)
        for node in graph.node:
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.type == onnx.AttributeProto.TENSOR:
                    add(attr.t, node.output[0] if node.output else attr.t.name)
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        walk(sub)

    walk(model.graph)
    return found


def pt2_stored(entries: list[tuple[str, bytes]]) -> dict[str, StoredTensor]:
    """From the weights and constants tables of a vetted ``.pt2``'s entries."""
    found: dict[str, StoredTensor] = {}
    for name, raw in entries:
        if not name.endswith(("model_weights_config.json", "model_constants_config.json")):
            continue
        config = json.loads(raw).get("config", {})
        for fqn, meta in config.items():
            tensor = meta.get("tensor_meta") or {}
            dtype, bits = PT2_DTYPES.get(tensor.get("dtype"), ("unknown", 32))
            numel = 1
            for size in tensor.get("sizes", []):
                numel *= int(size.get("as_int", 1)) if isinstance(size, dict) else 1
            found[str(fqn)] = StoredTensor(dtype, bits, numel)
    return found


def safetensors_stored(path: Path) -> dict[str, StoredTensor]:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(min(length, 100 * 2**20)))
    found: dict[str, StoredTensor] = {}
    for name, meta in header.items():
        if name == "__metadata__" or not isinstance(meta, dict):
            continue
        dtype, bits = SAFETENSORS_DTYPES.get(str(meta.get("dtype")), ("unknown", 32))
        numel = 1
        for dim in meta.get("shape", []):
            numel *= int(dim)
        found[name] = StoredTensor(dtype, bits, numel)
    return found
