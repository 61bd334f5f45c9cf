"""Evidence from an ONNX graph: the weight each compute op really consumes, and how it is stored.

Every weight input of a compute op (conv, gemm, matmul and their quantized forms, MatMulNBits,
an embedding ``Gather``, recurrent cells) that the graph computes from constants alone is a
weight, whatever ops lie between the stored tensors and the op (a ``Mul`` by a constant, a
``Transpose``, a ``DequantizeLinear``): that constant subgraph is evaluated with onnxruntime, so
zeros and distinct values are counted on what the op finally consumes, decoded (codes with their
scales and zero points). How it is stored is judged from the tensors it is computed from
(``storage``): quantized only when their bulk is integers of <= 8 bits and any float storage is
at most a quarter of it (scales, zero points), so a float weight next to a small int8 decoy, or
wrapped in QuantizeLinear -> DequantizeLinear, is float. A weight computed from the inputs at run
time, or hidden in a control-flow subgraph, is judged by the tensors it is computed from and
flagged for staff. Dead nodes and unused initializers are ignored.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from grader.contracts.observations import ModelEvidence, TensorEvidence
from grader.worker.evidence.tensors import tensor_evidence, unpack_bits

# op type -> the inputs that hold weights (when the graph computes them from constants)
WEIGHT_SLOTS: dict[str, tuple[int, ...]] = {
    "Conv": (1,),
    "ConvTranspose": (1,),
    "Gemm": (0, 1),
    "MatMul": (0, 1),
    "LSTM": (1, 2),
    "GRU": (1, 2),
    "RNN": (1, 2),
    "Gather": (0,),
    "QLinearConv": (3,),
    "QLinearMatMul": (0, 3),
    "ConvInteger": (1,),
    "MatMulInteger": (0, 1),
    "QGemm": (0, 3),
    "DynamicQuantizeMatMul": (1,),
    "MatMulIntegerToFloat": (0, 1),
    "MatMulNBits": (1,),
    "Einsum": (0, 1),
    "FusedConv": (1,),  # com.microsoft, as onnxruntime's optimizer writes them
    "FusedGemm": (0, 1),
    "FusedMatMul": (0, 1),
}
# (op, weight input) -> (scale input or None, zero-point input) the op decodes that weight with
DECODED_BY: dict[tuple[str, int], tuple[int | None, int]] = {
    ("QLinearConv", 3): (4, 5),
    ("QLinearMatMul", 0): (1, 2),
    ("QLinearMatMul", 3): (4, 5),
    ("QGemm", 0): (1, 2),
    ("QGemm", 3): (4, 5),
    ("ConvInteger", 1): (None, 3),
    ("MatMulInteger", 0): (None, 2),
    ("MatMulInteger", 1): (None, 3),
    ("DynamicQuantizeMatMul", 1): (2, 3),
    ("MatMulIntegerToFloat", 0): (2, 4),
    ("MatMulIntegerToFloat", 1): (3, 5),
}
NOT_PRUNABLE = {"Gather"}
CONTROL_FLOW = {"If", "Loop", "Scan"}
NONDETERMINISTIC = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}
# inputs that are shapes, axes or indices: never data, never parameters
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    "Reshape": (1,),
    "Expand": (1,),
    "Slice": (1, 2, 3, 4),
    "Tile": (1,),
    "Pad": (1, 3),
    "Resize": (1, 2, 3),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "ConstantOfShape": (0,),
    "Split": (1,),
    "TopK": (1,),
    "Gather": (1,),
    "GatherElements": (1,),
    "GatherND": (1,),
    "OneHot": (1,),
    "CumSum": (1,),
    "Range": (0, 1, 2),
    **{op: (1,) for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2")},
}
# inputs that hold scales or zero points: bookkeeping of a quantized tensor, not parameters
SCALE_INPUTS: dict[str, tuple[int, ...]] = {
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "QGemm": (1, 2, 4, 5, 7, 8),
    "QLinearAdd": (1, 2, 4, 5, 6, 7),
    "QLinearMul": (1, 2, 4, 5, 6, 7),
    "ConvInteger": (2, 3),
    "MatMulInteger": (2, 3),
    "DynamicQuantizeMatMul": (2, 3),
    "MatMulIntegerToFloat": (2, 3, 4, 5),
    "MatMulNBits": (2, 3, 4),
}
PACKED_BITS = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}
MAX_CODE_BITS = 8.5  # integer bits per weight element a "<= 8-bit" weight may store (padding, zero points)
FLOAT_BUDGET = 1 / 4  # float elements a quantized weight may carry per element (scales, zero points)
RUNTIME_WEIGHT_MIN = 256  # elements: smaller 2-D constants on a matmul's activation path are masks, not weights
KERNEL_OPS = {
    "Conv",
    "ConvTranspose",
    "ConvInteger",
    "QLinearConv",
    "FusedConv",
}  # whatever reaches their kernel is a weight
_INDEX_TYPES = (onnx.TensorProto.INT64, onnx.TensorProto.BOOL)
# ops whose constant operands are offsets, masks or tables (positional embeddings, attention masks)
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Where", "Concat", "Max", "Min", "Equal", "Less", "Greater"}


@dataclass
class Graph:
    """Constants, producers and the live nodes of a graph; which values are computed from constants alone."""

    constants: dict[str, onnx.TensorProto]
    producer: dict[str, onnx.NodeProto]
    live: list[onnx.NodeProto]
    constant_values: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Storage:
    """How the tensors a weight is computed from are stored."""

    sources: tuple[str, ...]
    low_bit_elements: int
    other_elements: int
    bits: int  # of the largest source
    dtype: str  # of the largest source
    largest: str
    low_bits: int  # of the largest integer source of <= 8 bits (the codes), 0 if none
    low_parts: tuple[tuple[int, int], ...] = ()  # (bits, elements) of each integer source of <= 8 bits

    def code_bits(self, numel: int) -> float:
        """Integer bits stored per weight element by the bulk sources (those at least half the
        weight's size): one int8 tensor is 8, two int8 tensors combined into one weight are 16."""
        return sum(bits * elements for bits, elements in self.low_parts if elements >= 0.5 * numel) / max(numel, 1)

    def quantized_for(self, numel: int) -> bool:
        return (
            self.low_bit_elements >= 0.5 * numel
            and self.other_elements <= FLOAT_BUDGET * max(numel, 1)
            and self.code_bits(numel) <= MAX_CODE_BITS
        )


def _constant_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    constants = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    constants[node.output[0]] = attr.t
    return constants


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    found = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            found.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            found.extend(attr.graphs)
    return found


def _outer_references(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from the scope around it."""
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    used: set[str] = set()
    for node in graph.node:
        used.update(i for i in node.input if i)
        for sub in _subgraphs(node):
            used |= _outer_references(sub)
        local.update(o for o in node.output if o)
    return used - local


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """A node's inputs, and for control flow every outer value its subgraphs read."""
    names = [i for i in node.input if i]
    for sub in _subgraphs(node):
        names.extend(sorted(_outer_references(sub)))
    return names


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
            needed.extend(node_inputs(node))
    live = [n for n in graph.node if id(n) in live_ids]
    constants = {k: v for k, v in _constant_tensors(graph).items() if k in seen_values}
    g = Graph(constants, producer, live)
    g.constant_values = _computed_from_constants(g)
    return g


def _computed_from_constants(g: Graph) -> set[str]:
    """Values that depend on no graph input: constants, and outputs of deterministic nodes whose
    inputs all are (iterated to a fixed point, so an unsorted graph is read the same)."""
    known = set(g.constants)
    changed = True
    while changed:
        changed = False
        for node in g.live:
            if node.op_type == "Constant" or node.op_type in NONDETERMINISTIC | CONTROL_FLOW:
                continue
            inputs = [i for i in node.input if i]
            if inputs and all(i in known for i in inputs) and not set(node.output) <= known:
                known.update(o for o in node.output if o)
                changed = True
    return known


def _numel(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims)) if tensor.dims else 1


def _array(tensor: onnx.TensorProto) -> np.ndarray:
    """Stored values; 4-bit types unpacked to one integer per element."""
    bits = PACKED_BITS.get(tensor.data_type)
    if not bits:
        return numpy_helper.to_array(tensor)
    if tensor.raw_data:
        values = unpack_bits(np.frombuffer(tensor.raw_data, dtype=np.uint8), 4)[: _numel(tensor)]
    else:
        values = np.array(tensor.int32_data, dtype=np.int32)
    values = values.astype(np.int8)
    if tensor.data_type == onnx.TensorProto.INT4:
        values = np.where(values > 7, values - 16, values).astype(np.int8)
    return values.reshape(tuple(tensor.dims))


def _stored_bits(tensor: onnx.TensorProto) -> tuple[int, str, bool]:
    """(bits per element, dtype name, whether it is an integer of <= 8 bits)."""
    if tensor.data_type in PACKED_BITS:
        name = "int4" if tensor.data_type == onnx.TensorProto.INT4 else "uint4"
        return 4, name, True
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    bits = dtype.itemsize * 8
    return bits, str(dtype), np.issubdtype(dtype, np.integer) and bits <= 8


# --------------------------------------------------------------------------- where a weight comes from


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    skip = SHAPE_INPUTS.get(node.op_type, ())
    names = [name for i, name in enumerate(node.input) if name and i not in skip]
    for sub in _subgraphs(node):
        names.extend(sorted(_outer_references(sub)))
    return names


def sources_of(g: Graph, value: str, stop_at_compute: bool = False) -> list[str]:
    """The stored tensors ``value`` is computed from, through data inputs (not shapes or axes).

    With ``stop_at_compute``, the walk ends at the output of any compute op that depends on the
    inputs (an activation path: the weights before it are that op's own).
    """
    found: list[str] = []
    stack, seen = [value], set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in g.constants:
            found.append(name)
            continue
        node = g.producer.get(name)
        if node is None or node.op_type == "Constant":
            continue
        if stop_at_compute and node.op_type in WEIGHT_SLOTS and name not in g.constant_values:
            continue
        stack.extend(_data_inputs(node))
    return found


def storage(g: Graph, sources: list[str], packed: dict[str, int] | None = None) -> Storage:
    """How ``sources`` are stored. ``packed`` names uint8 tensors holding ``bits``-bit codes
    (MatMulNBits), counted as that many elements of that width."""
    packed = packed or {}
    low = other = 0
    parts: list[tuple[int, int]] = []
    codes, codes_size = 0, -1
    largest, largest_size, largest_bits, largest_dtype = "", -1, 32, "float32"
    for name in dict.fromkeys(sources):
        tensor = g.constants[name]
        bits, dtype, low_bit = _stored_bits(tensor)
        numel = _numel(tensor)
        if name in packed:
            bits, dtype, low_bit = packed[name], f"uint{packed[name]}", True
            numel = numel * 8 // bits
        if low_bit:
            low += numel
            parts.append((bits, numel))
            if numel > codes_size:
                codes, codes_size = bits, numel
        else:
            other += numel
        if numel > largest_size:
            largest, largest_size, largest_bits, largest_dtype = name, numel, bits, dtype
    return Storage(tuple(sources), low, other, largest_bits, largest_dtype, largest, codes, tuple(parts))


# --------------------------------------------------------------------------- evaluating constant weights


def evaluate_constants(model: onnx.ModelProto, g: Graph, names: set[str]) -> dict[str, np.ndarray]:
    """The values of ``names`` (all computed from constants), as onnxruntime computes them.

    Stored tensors are read directly; anything computed runs as a graph with no inputs made of
    just the nodes it needs, with the model's opsets and functions. If onnxruntime refuses that
    graph, the computed values are left out (the caller judges those weights by their storage).
    """
    values = {name: _array(g.constants[name]) for name in names if name in g.constants}
    wanted = sorted(names - set(values))
    if not wanted:
        return values
    nodes = _nodes_computing(g, wanted)
    used = {i for n in nodes for i in node_inputs(n)}
    graph = helper.make_graph(
        nodes,
        "constant_weights",
        [],
        [helper.make_empty_tensor_value_info(name) for name in wanted],
        initializer=[g.constants[n] for n in sorted(used) if n in g.constants and g.producer.get(n) is None],
    )
    sub = helper.make_model(graph, opset_imports=model.opset_import, functions=model.functions)
    sub.ir_version = model.ir_version
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.intra_op_num_threads = 1
        options.log_severity_level = 4
        session = ort.InferenceSession(sub.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values.update(zip(wanted, session.run(wanted, {}), strict=True))
    except Exception:  # noqa: BLE001 - an unrunnable constant subgraph: judged by storage instead
        pass
    return values


def _nodes_computing(g: Graph, wanted: list[str]) -> list[onnx.NodeProto]:
    needed_ids: set[int] = set()
    stack = list(wanted)
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        node = g.producer.get(name)
        if node is not None and id(node) not in needed_ids:
            needed_ids.add(id(node))
            stack.extend(node_inputs(node))
    return [n for n in g.live if id(n) in needed_ids]


# --------------------------------------------------------------------------- decoding


def _attr(node: onnx.NodeProto, name: str, default: int | None = None) -> int | None:
    for attr in node.attribute:
        if attr.name == name:
            return int(attr.i)
    return default


def _quantized_op_axis(node: onnx.NodeProto, index: int) -> int:
    """Axis of the weight in input ``index`` that a per-channel scale of a quantized op runs along.

    A MatMul-like op's B is ``[K, N]`` with one scale per column (N), its A one per row; QGemm's
    B is ``[N, K]`` only with ``transB``; a conv's weight is per output channel.
    """
    if node.op_type == "QGemm":
        if index == 0:
            return -2
        return 0 if _attr(node, "transB", 0) else 1
    if node.op_type in {"QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}:
        return -2 if index == 0 else -1
    return 0


def dequantize(codes: np.ndarray, scale: np.ndarray | None, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    """``(codes - zero_point) * scale``, per tensor, per channel along ``axis`` or per block."""
    out = codes.astype(np.float64)
    for param, apply in ((zero_point, np.subtract), (scale, np.multiply)):
        if param is None:
            continue
        out = apply(out, _broadcast(np.asarray(param, dtype=np.float64), codes.shape, axis))
    return out.astype(np.float32) if scale is not None else out.astype(np.int32)


def _broadcast(param: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    if param.size <= 1 or not shape:
        return param.reshape(()) if param.size == 1 else np.zeros(())
    if param.ndim == len(shape) and param.ndim > 1:  # blocked: repeat each entry over its block
        for dim, (have, want) in enumerate(zip(param.shape, shape, strict=True)):
            if have != want and have:
                param = np.repeat(param, -(-want // have), axis=dim)[(slice(None),) * dim + (slice(0, want),)]
        return param
    axis %= len(shape)
    if shape[axis] != param.size:
        return param.reshape(-1)[:1].reshape(())
    target = [1] * len(shape)
    target[axis] = param.size
    return param.reshape(target)


def decode_matmul_nbits(node: onnx.NodeProto, b: np.ndarray, scales: np.ndarray, zp: np.ndarray | None) -> np.ndarray:
    """MatMulNBits' weight as ``[N, K]`` floats: codes packed low-first per block, one scale and
    zero point per block (packed like the codes when uint8, default ``2**(bits-1)``), the padding
    of the last block trimmed to ``K``."""
    k, n = _attr(node, "K", 0) or 0, _attr(node, "N", 0) or 0
    bits, block = _attr(node, "bits", 4) or 4, _attr(node, "block_size", 32) or 32
    blocks = -(-k // block)
    codes = unpack_bits(b, bits).reshape(n, blocks, block).astype(np.float64)
    scale = np.asarray(scales, dtype=np.float64).reshape(n, blocks)
    if zp is None:
        zero = np.full((n, blocks), 2 ** (bits - 1), np.float64)
    elif zp.dtype == np.uint8:
        zero = unpack_bits(zp, bits).reshape(n, -1)[:, :blocks].astype(np.float64)
    else:
        zero = np.asarray(zp, dtype=np.float64).reshape(n, blocks)
    decoded = (codes - zero[:, :, None]) * scale[:, :, None]
    return decoded.reshape(n, blocks * block)[:, :k].astype(np.float32)


# --------------------------------------------------------------------------- weights


@dataclass
class _Slot:
    node: onnx.NodeProto
    index: int
    value: str


def _weight_slots(g: Graph) -> tuple[list[_Slot], list[_Slot]]:
    """(weights computed from constants, weight inputs computed from the inputs at run time).

    A compute op whose output is itself constant is constant folding, not a layer; an op whose
    weight inputs all depend on the inputs (a conv with a computed kernel, attention's two
    matmul operands) is a candidate for a run-time weight.
    """
    constant, runtime = [], []
    for node in g.live:
        slots = [i for i in WEIGHT_SLOTS.get(node.op_type, ()) if i < len(node.input) and node.input[i]]
        if not slots or all(o in g.constant_values for o in node.output if o):
            continue
        const = [i for i in slots if node.input[i] in g.constant_values]
        constant.extend(_Slot(node, i, node.input[i]) for i in const)
        if not const and node.op_type != "Gather":
            runtime.extend(_Slot(node, i, node.input[i]) for i in slots)
    return constant, runtime


def _decode_inputs(g: Graph, slot: _Slot) -> list[str]:
    """The constant inputs needed to decode a slot: its scale and zero point, MatMulNBits' too."""
    node = slot.node
    if node.op_type == "MatMulNBits":
        indices = (2, 3)
    else:
        indices = tuple(i for i in DECODED_BY.get((node.op_type, slot.index), ()) if i is not None)
    return [node.input[i] for i in indices if i < len(node.input) and node.input[i] in g.constant_values]


def _consumers(g: Graph, value: str) -> list[onnx.NodeProto]:
    return [n for n in g.live if value in n.input]


def _gather_decoder(g: Graph, slot: _Slot) -> onnx.NodeProto | None:
    """The DequantizeLinear that decodes an embedding table's rows after the Gather, if any
    (onnxruntime's quantize_dynamic writes uint8 table -> Gather -> DequantizeLinear)."""
    value = slot.node.output[0]
    for _ in range(4):
        users = _consumers(g, value)
        if len(users) != 1:
            return None
        user = users[0]
        if user.op_type == "DequantizeLinear" and user.input[0] == value:
            return user
        if user.op_type not in {"Reshape", "Squeeze", "Unsqueeze", "Identity", "Transpose"}:
            return None
        value = user.output[0]
    return None


def _decoded(g: Graph, slot: _Slot, values: dict[str, np.ndarray]) -> np.ndarray | None:
    """What the op computes with: the consumed tensor, decoded where the op decodes it."""
    node, consumed = slot.node, values.get(slot.value)
    if consumed is None:
        return None
    if node.op_type == "MatMulNBits":
        zp = values.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        scales = values.get(node.input[2])
        return None if scales is None else decode_matmul_nbits(node, consumed, scales, zp)
    decoder = DECODED_BY.get((node.op_type, slot.index))
    if decoder is not None:
        scale_i, zp_i = decoder
        scale = values.get(node.input[scale_i]) if scale_i is not None and scale_i < len(node.input) else None
        zp = values.get(node.input[zp_i]) if zp_i < len(node.input) and node.input[zp_i] else None
        return dequantize(consumed, scale, zp, _quantized_op_axis(node, slot.index))
    if node.op_type == "Gather" and np.issubdtype(consumed.dtype, np.integer):
        dq = _gather_decoder(g, slot)
        if dq is not None and all(i in values for i in dq.input[1:3] if i):
            zp = values.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
            return dequantize(consumed, values[dq.input[1]], zp, 0)
    return consumed


def _slot_evidence(g: Graph, slot: _Slot, values: dict[str, np.ndarray]) -> TensorEvidence | None:
    node = slot.node
    decode = _decode_inputs(g, slot)
    packed = {slot.value: _attr(node, "bits", 4) or 4} if node.op_type == "MatMulNBits" else None
    sources = sources_of(g, slot.value) + [s for name in decode for s in sources_of(g, name)]
    if not sources:
        return None
    store = storage(g, sources, packed)
    decoded = _decoded(g, slot, values)
    if decoded is None:  # not computable here: judged by its largest stored tensor
        decoded = _array(g.constants[store.largest])
    quantized = store.quantized_for(int(decoded.size))
    combined = store.code_bits(int(decoded.size))
    bits = store.low_bits if quantized else (int(np.ceil(combined)) if combined > MAX_CODE_BITS else store.bits)
    return tensor_evidence(
        store.largest,
        decoded,
        node.op_type,
        prunable=node.op_type not in NOT_PRUNABLE,
        quantized=quantized,
        bits=bits,
        stored_dtype=store.dtype if combined <= MAX_CODE_BITS else f"{store.dtype} x{len(store.low_parts)} combined",
    )


def _runtime_weights(g: Graph, slots: list[_Slot], taken: set[str]) -> tuple[list[TensorEvidence], list[str]]:
    """Stored tensors that reach a compute op's weight input only through a computation on the
    inputs: counted as that op's weights, as stored, and flagged."""
    weights, flags = [], []
    for slot in slots:
        for name in sources_of(g, slot.value, stop_at_compute=True):
            tensor = g.constants[name]
            small = _numel(tensor) < RUNTIME_WEIGHT_MIN and slot.node.op_type not in KERNEL_OPS
            if name in taken or len(tensor.dims) < 2 or small:
                continue
            if tensor.data_type == onnx.TensorProto.BOOL:
                continue
            taken.add(name)
            weights.append(_as_stored(g, name, f"{slot.node.op_type} (computed at run time)"))
            flags.append(
                f"the {_named(slot.node.op_type)} '{_named(slot.node.name or slot.value)}' computes its weight "
                f"from the inputs at run time (from '{_named(name)}')"
            )
    return weights, flags


def _as_stored(g: Graph, name: str, layer: str) -> TensorEvidence:
    """A stored tensor as a weight, judged by how it is stored (nothing decodes it on the way)."""
    store = storage(g, [name])
    values = _array(g.constants[name])
    return tensor_evidence(
        name,
        values,
        layer,
        prunable=True,
        quantized=store.quantized_for(int(values.size)),
        bits=store.bits,
        stored_dtype=store.dtype,
    )


def _named(text: str, limit: int = 80) -> str:
    """A name from the file, short enough for a flag (the file chooses its names and their length)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _control_flow_weights(g: Graph, taken: set[str]) -> tuple[list[TensorEvidence], list[str]]:
    """Tensors stored inside If / Loop / Scan bodies: judged as stored, since what runs depends on the inputs."""
    weights, flags = [], []
    for node in g.live:
        if node.op_type not in CONTROL_FLOW:
            continue
        flags.append(f"the graph has a {node.op_type} ('{_named(node.name)}'): what runs can depend on the inputs")
        for sub in _subgraphs(node):
            for tensor in _all_constants(sub):
                if tensor.name in taken or len(tensor.dims) < 2:
                    continue
                taken.add(tensor.name)
                bits, dtype, _ = _stored_bits(tensor)
                values = _array(tensor)
                weights.append(
                    tensor_evidence(
                        tensor.name,
                        values,
                        f"{node.op_type} body",
                        prunable=True,
                        quantized=False,
                        bits=bits,
                        stored_dtype=dtype,
                    )
                )
    return weights, flags


def _all_constants(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    found = list(_constant_tensors(graph).values())
    for node in graph.node:
        for sub in _subgraphs(node):
            found.extend(_all_constants(sub))
    return found


def weight_evidence(model: onnx.ModelProto, g: Graph) -> tuple[list[TensorEvidence], list[str]]:
    constant, runtime = _weight_slots(g)
    needed = {s.value for s in constant} | {n for s in constant for n in _decode_inputs(g, s)}
    for slot in constant:
        if slot.node.op_type == "Gather" and (dq := _gather_decoder(g, slot)) is not None:
            needed |= {i for i in dq.input[1:3] if i in g.constant_values}
    values = evaluate_constants(model, g, needed)
    found: dict[str, TensorEvidence] = {}
    for slot in constant:
        if slot.value in found:
            continue
        evidence = _slot_evidence(g, slot, values)
        if evidence is not None:
            found[slot.value] = evidence
    taken = {s for slot in constant for s in sources_of(g, slot.value)}
    taken |= {s for slot in constant for name in _decode_inputs(g, slot) for s in sources_of(g, name)}
    hidden, flags = _runtime_weights(g, runtime, taken)
    body, body_flags = _control_flow_weights(g, taken)
    unknown, unknown_flags = _unplaced_weights(g, taken)
    return [*found.values(), *hidden, *body, *unknown], flags + body_flags + unknown_flags


def _unplaced_weights(g: Graph, taken: set[str]) -> tuple[list[TensorEvidence], list[str]]:
    """Stored tensors of weight size that the graph uses as data but that reach no known weight
    input (an op the grader does not list, a control-flow body reading them from outside):
    counted as weights, as stored, and flagged, so that no live parameter escapes the evidence."""
    meta, consumer = _bookkeeping(g)
    weights, flags = [], []
    for name, tensor in g.constants.items():
        if name in taken or name not in consumer or meta.get(name, False):
            continue
        if len(tensor.dims) < 2 or _numel(tensor) < RUNTIME_WEIGHT_MIN or tensor.data_type in _INDEX_TYPES:
            continue
        if tensor.data_type == onnx.TensorProto.BOOL or (name in g.producer and g.producer[name].op_type != "Constant"):
            continue
        taken.add(name)
        op = consumer[name]
        evidence = _as_stored(g, name, f"{op} (not a known weight input)")
        # counted as dense: such a tensor can only dilute the sparsity, never add zeros to it (a
        # large all-zero constant added to an activation is not pruning)
        weights.append(evidence.model_copy(update={"zeros": 0, "near_zeros": 0}))
        if op not in ELEMENTWISE and op not in WEIGHT_SLOTS:  # a known layer's other inputs are its biases
            flags.append(
                f"'{_named(name)}' ({_numel(tensor):,} values) is used by a {_named(op)} where the grader "
                "knows no weight input"
            )
    return weights, flags[:20]


def _bookkeeping(g: Graph) -> tuple[dict[str, bool], dict[str, str]]:
    """Which stored tensors only ever feed shape, scale or zero-point inputs; and, for every
    stored tensor in use, the op type of its first consumer (a control-flow op for a tensor one
    of its bodies reads)."""
    meta: dict[str, bool] = {}
    consumer: dict[str, str] = {}
    for node in g.live:
        indices = set(SHAPE_INPUTS.get(node.op_type, ())) | set(SCALE_INPUTS.get(node.op_type, ()))
        for i, name in enumerate(node.input):
            if name in g.constants:
                meta[name] = meta.get(name, True) and i in indices
                consumer.setdefault(name, node.op_type)
        for sub in _subgraphs(node):
            for name in _outer_references(sub):
                if name in g.constants:
                    meta[name] = False
                    consumer.setdefault(name, node.op_type)
    return meta, consumer


# --------------------------------------------------------------------------- parameters


def parameter_count(g: Graph) -> int:
    """Elements of stored tensors used as data (weights, biases, norms), not scales, zero points
    or shapes; packed codes count one element per code."""
    bookkeeping: dict[str, bool] = {}
    packed: dict[str, int] = {}
    for node in g.live:
        meta = set(SHAPE_INPUTS.get(node.op_type, ())) | set(SCALE_INPUTS.get(node.op_type, ()))
        for i, name in enumerate(node.input):
            if name in g.constants:
                bookkeeping[name] = bookkeeping.get(name, True) and i in meta
        if node.op_type == "MatMulNBits" and len(node.input) > 1:  # codes of K x N weights, padding excluded
            packed[node.input[1]] = (_attr(node, "K", 0) or 0) * (_attr(node, "N", 0) or 0)
        for sub in _subgraphs(node):
            for name in _outer_references(sub):
                if name in g.constants:
                    bookkeeping[name] = False
    total = 0
    for name, tensor in g.constants.items():
        numel = _numel(tensor)
        if bookkeeping.get(name, False) or tensor.data_type in _INDEX_TYPES:
            continue
        if numel <= 1:
            continue  # scalars are bookkeeping, not parameters
        total += packed.get(name, numel)
    for node in g.live:
        if node.op_type in CONTROL_FLOW:
            body = [t for sub in _subgraphs(node) for t in _all_constants(sub)]
            total += sum(_numel(t) for t in body if _numel(t) > 1 and t.data_type not in _INDEX_TYPES)
    return total


def onnx_evidence(model: onnx.ModelProto) -> ModelEvidence:
    g = live_graph(model.graph)
    weights, flags = weight_evidence(model, g)
    notes = []
    fake = [
        n
        for n in g.live
        if n.op_type == "QuantizeLinear"
        and n.input[0] in g.constant_values
        and any(not _stored_bits(g.constants[s])[2] for s in sources_of(g, n.input[0]))
    ]
    if fake:
        notes.append(
            f"{len(fake)} float weight tensor(s) pass through QuantizeLinear at run time "
            "(fake quantization): they are stored as float"
        )
    if any(w.layer.endswith("body") for w in weights):
        notes.append("weights inside control-flow bodies are counted as stored (float unless integer)")
    return ModelEvidence(
        format="onnx",
        params_total=parameter_count(g),
        weights=weights,
        op_types=dict(Counter(n.op_type for n in g.live)),
        notes=notes,
        flags=flags,
    )
