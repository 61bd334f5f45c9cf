"""Evidence from an ONNX graph: which weights the live graph uses, and how each is stored.

A weight counts as quantized only when the *stored* initializer is an integer of <= 8 bits that
the graph dequantizes (DequantizeLinear, QLinear*, *Integer, QGemm, MatMulNBits). A float
initializer wrapped in QuantizeLinear -> DequantizeLinear is fake quantization and counts as
float. Dead nodes and unused initializers are ignored, so leftover fp32 copies prove nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from grader.contracts.observations import ModelEvidence, TensorEvidence
from grader.worker.evidence.tensors import is_low_bit_integer, tensor_evidence, unpack_nibbles

# op type -> {weight input index: zero-point input index or None}
QUANTIZED_SLOTS: dict[str, dict[int, int | None]] = {
    "QLinearConv": {3: 5},
    "QLinearMatMul": {0: 2, 3: 5},
    "ConvInteger": {1: 3},
    "MatMulInteger": {0: 2, 1: 3},
    "QGemm": {3: 5},
    "DynamicQuantizeMatMul": {1: 3},
    "MatMulIntegerToFloat": {0: 4, 1: 5},
    "MatMulNBits": {1: 3},
}
FLOAT_SLOTS: dict[str, tuple[int, ...]] = {
    "Conv": (1,),
    "ConvTranspose": (1,),
    "Gemm": (0, 1),
    "MatMul": (0, 1),
    "LSTM": (1, 2),
    "GRU": (1, 2),
    "RNN": (1, 2),
    "Gather": (0,),
}
NOT_PRUNABLE = {"Gather"}
TRANSPARENT = {"Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Flatten", "Cast"}
LOW_BIT_TYPES = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}
# inputs that hold scales, zero points or shapes: never counted as parameters
META_SLOTS: dict[str, tuple[int, ...]] = {
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "QGemm": (1, 2, 4, 5, 7, 8),
    "QLinearAdd": (1, 2, 4, 5, 6, 7),
    "ConvInteger": (2, 3),
    "MatMulInteger": (2, 3),
    "MatMulNBits": (2, 3),
    "Reshape": (1,),
    "Expand": (1,),
    "Slice": (1, 2, 3, 4),
    "Resize": (1, 2, 3),
    "Pad": (1, 2),
}


@dataclass
class Graph:
    """Constants, producers and consumers of the live part of a graph."""

    constants: dict[str, onnx.TensorProto]
    producer: dict[str, onnx.NodeProto]
    live: list[onnx.NodeProto]


def _constant_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    constants[node.output[0]] = attr.t
    return constants


def live_graph(graph: onnx.GraphProto) -> Graph:
    """Walk back from the outputs so dead branches and unused initializers are left out."""
    producer = {out: node for node in graph.node for out in node.output if out}
    needed = [o.name for o in graph.output]
    seen_values: set[str] = set()
    live_ids: set[int] = set()
    while needed:
        value = needed.pop()
        if value in seen_values:
            continue
        seen_values.add(value)
        node = producer.get(value)
        if node is not None and id(node) not in live_ids:
            live_ids.add(id(node))
            needed.extend(i for i in node.input if i)
    live = [n for n in graph.node if id(n) in live_ids]
    constants = {k: v for k, v in _constant_tensors(graph).items() if k in seen_values}
    return Graph(constants, producer, live)


def _array(tensor: onnx.TensorProto) -> tuple[np.ndarray, int | None]:
    """Stored values, with 4-bit types unpacked (bits returned separately)."""
    bits = LOW_BIT_TYPES.get(tensor.data_type)
    if bits:
        raw = np.frombuffer(tensor.raw_data, dtype=np.uint8) if tensor.raw_data else np.array(tensor.int32_data)
        values = unpack_nibbles(raw)[: int(np.prod(tensor.dims))] if tensor.raw_data else raw
        if tensor.data_type == onnx.TensorProto.INT4:
            values = values.astype(np.int8)
            values = np.where(values > 7, values - 16, values)
        return values.reshape(tuple(tensor.dims)), bits
    return numpy_helper.to_array(tensor), None


def _trace_to_constant(g: Graph, value: str) -> tuple[str | None, onnx.NodeProto | None]:
    """Follow a weight input back through reshapes and Q/DQ to the tensor actually stored.

    Returns the stored constant and the DequantizeLinear that decodes it (if any).
    """
    dequant = None
    for _ in range(16):
        if value in g.constants:
            return value, dequant
        node = g.producer.get(value)
        if node is None:
            return None, None
        if node.op_type == "DequantizeLinear":
            dequant = node
        elif node.op_type not in TRANSPARENT | {"QuantizeLinear"}:
            return None, None
        value = node.input[0]
    return None, None


def _attr(node: onnx.NodeProto, name: str, default: int | None = None) -> int | None:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def _zero_point(g: Graph, node: onnx.NodeProto, index: int | None) -> np.ndarray | int:
    if index is None or index >= len(node.input) or not node.input[index]:
        return 8 if node.op_type == "MatMulNBits" else 0
    name = node.input[index]
    return numpy_helper.to_array(g.constants[name]) if name in g.constants else 0


def _quantized_op_axis(node: onnx.NodeProto, index: int) -> int:
    """Axis of the weight in input ``index`` that a per-channel zero point of a QOperator op runs along.

    Not always 0: a MatMul-like op's B is ``[K, N]`` with one zero point per column (N), its A
    one per row; QGemm's B is ``[N, K]`` only with ``transB``. With the wrong axis a per-channel
    zero point cannot broadcast and only the first channel's zero point would be counted.
    """
    if node.op_type == "QGemm":
        return 0 if _attr(node, "transB", 0) else 1
    if node.op_type in {"QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}:
        return -2 if index == 0 else -1
    return 0  # QLinearConv / ConvInteger: output channels


def _evidence_for_slot(g: Graph, node: onnx.NodeProto, index: int, zp_index: int | None) -> TensorEvidence | None:
    if index >= len(node.input) or not node.input[index]:
        return None
    stored, dequant = _trace_to_constant(g, node.input[index])
    if stored is None:
        return None
    values, packed_bits = _array(g.constants[stored])
    if node.op_type == "MatMulNBits":
        packed_bits = _attr(node, "bits", 4)
        values = unpack_nibbles(values) if packed_bits == 4 else values
    bits = packed_bits or values.dtype.itemsize * 8
    decoder = dequant if dequant is not None else (node if node.op_type in QUANTIZED_SLOTS else None)
    quantized = decoder is not None and is_low_bit_integer(values.dtype, bits)
    if decoder is dequant and dequant is not None:
        zp, axis = _zero_point(g, dequant, 2), _attr(dequant, "axis", 1)
    elif decoder is not None:
        zp, axis = _zero_point(g, node, zp_index), _quantized_op_axis(node, index)
    else:
        zp, axis = 0, None
    return tensor_evidence(
        stored,
        values,
        node.op_type,
        prunable=node.op_type not in NOT_PRUNABLE,
        quantized=quantized,
        zero_point=zp if quantized else 0,
        axis=axis,
        bits=bits,
        stored_dtype=f"int{bits}" if packed_bits else None,
    )


def weight_evidence(g: Graph) -> list[TensorEvidence]:
    found: dict[str, TensorEvidence] = {}
    for node in g.live:
        slots = QUANTIZED_SLOTS.get(node.op_type) or {i: None for i in FLOAT_SLOTS.get(node.op_type, ())}
        for index, zp_index in slots.items():
            ev = _evidence_for_slot(g, node, index, zp_index)
            if ev is not None and ev.name not in found:
                found[ev.name] = ev
    return list(found.values())


def parameter_count(g: Graph) -> int:
    """Elements of constants used as data (weights, biases, norms), not scales or shapes."""
    meta_only: dict[str, bool] = defaultdict(lambda: True)
    for node in g.live:
        meta = META_SLOTS.get(node.op_type, ())
        for i, name in enumerate(node.input):
            if name in g.constants:
                meta_only[name] = meta_only[name] and i in meta
    total = 0
    for name, tensor in g.constants.items():
        numel = int(np.prod(tensor.dims)) if tensor.dims else 1
        if meta_only[name] or tensor.data_type == onnx.TensorProto.INT64 or numel <= 1:
            continue  # scales, zero points, shapes and scalars are bookkeeping, not parameters
        total += numel
    return total


def onnx_evidence(model: onnx.ModelProto) -> ModelEvidence:
    g = live_graph(model.graph)
    notes = []
    if any(n.op_type in {"If", "Loop", "Scan"} for n in g.live):
        notes.append("control-flow subgraphs are not inspected; their weights are not counted")
    fake = [n for n in g.live if n.op_type == "QuantizeLinear" and n.input[0] in g.constants]
    if fake:
        notes.append(
            f"{len(fake)} float weight tensor(s) pass through QuantizeLinear at run time "
            "(fake quantization): they are stored as float"
        )
    return ModelEvidence(
        format="onnx",
        params_total=parameter_count(g),
        weights=weight_evidence(g),
        op_types=dict(Counter(n.op_type for n in g.live)),
        notes=notes,
    )
