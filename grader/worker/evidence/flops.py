"""Multiply-accumulates (MACs) of one inference, counted from the model itself.

ONNX: the graph's shapes are inferred by ``onnx.shape_inference`` with the real input shapes
(batch 1), then every conv / gemm / matmul node (float or quantized) contributes
``output elements x reduction length``. Torch formats: ``torch.utils.flop_counter`` counts the
aten ops of one real batch-1 run (``torch.export`` programs included). FLOPs are
2 x MACs by the usual convention; element-wise ops, pooling and normalisation are not counted,
the same way for every model, so ratios between two models are fair.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

SMALL_CONSTANT = 64  # initializers up to this size stay in the light graph (shapes, axes)


@dataclass(frozen=True)
class MacCount:
    macs: int | None
    note: str


# op type -> (index of the data input, index of the weight input)
CONV_OPS = {"Conv": (0, 1), "QLinearConv": (0, 3), "ConvInteger": (0, 1), "FusedConv": (0, 1)}
GEMM_OPS = {"Gemm": (0, 1), "QGemm": (0, 3)}
MATMUL_OPS = {
    "MatMul": (0, 1),
    "QLinearMatMul": (0, 3),
    "MatMulInteger": (0, 1),
    "FusedMatMul": (0, 1),
    "DynamicQuantizeMatMul": (0, 1),
    "MatMulIntegerToFloat": (0, 1),
}
UNCOUNTED_HEAVY = {"LSTM", "GRU", "RNN", "Einsum", "Attention", "MultiHeadAttention", "If", "Loop", "Scan"}


def onnx_macs(model: Any, input_shapes: dict[str, tuple[int, ...]]) -> MacCount:
    """MACs of one run with inputs of ``input_shapes`` (pass batch-1 shapes for per-sample MACs)."""
    try:
        inferred, shapes = _infer(_light_copy(model, input_shapes))
    except Exception as exc:  # noqa: BLE001 - any inference failure means "not computable"
        return MacCount(None, f"not computable: ONNX shape inference failed ({type(exc).__name__})")
    total, unknown = 0, []
    for node in inferred.graph.node:
        macs = _node_macs(node, shapes)
        if macs is None:
            unknown.append(node.op_type)
        else:
            total += macs
    heavy = sorted({n.op_type for n in inferred.graph.node if n.op_type in UNCOUNTED_HEAVY})
    if unknown:
        return MacCount(None, f"not computable: shapes of {', '.join(sorted(set(unknown)))} could not be inferred")
    note = "counted from the ONNX graph (conv, gemm, matmul; shape inference at the given input shapes)"
    if heavy:
        note += f"; {', '.join(heavy)} not counted"
    return MacCount(total, note)


def _light_copy(model: Any, input_shapes: dict[str, tuple[int, ...]]) -> Any:
    """The graph with concrete input shapes and its large weights as typed inputs (no data copied)."""
    from onnx import helper

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        shape = input_shapes.get(value.name)
        elem = value.type.tensor_type.elem_type
        inputs.append(helper.make_tensor_value_info(value.name, elem, list(shape)) if shape is not None else value)
    small = [t for t in graph.initializer if prod(t.dims) <= SMALL_CONSTANT]
    for tensor in graph.initializer:
        if prod(tensor.dims) > SMALL_CONSTANT:
            inputs.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    light_graph = helper.make_graph(
        list(graph.node), graph.name or "graph", inputs, list(graph.output), initializer=small
    )
    light = helper.make_model(light_graph, opset_imports=list(model.opset_import))
    light.ir_version = model.ir_version
    light.functions.extend(model.functions)
    return light


def _infer(light: Any, rounds: int = 8) -> tuple[Any, dict[str, tuple[int, ...] | None]]:
    """ONNX shape inference, helped across onnxruntime's quantized contrib ops it does not know.

    ``onnx.shape_inference`` stops at ``com.microsoft`` ops (QGemm, QLinearGlobalAveragePool,
    ...), which static int8 quantization emits; their output shapes follow simple rules, so they
    are filled in and inference runs again until nothing new is learnt.
    """
    from onnx import helper, shape_inference

    for _ in range(rounds):
        inferred = shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
        shapes = _known_shapes(inferred.graph)
        types = _elem_types(inferred.graph)
        learnt = []
        for node in inferred.graph.node:
            rule = CONTRIB_SHAPES.get(node.op_type)
            if rule is None or not node.output or shapes.get(node.output[0]) is not None:
                continue
            shape = rule(node, shapes)
            if shape is not None:
                elem = types.get(node.input[0], 1) if node.op_type != "QGemm" or _has_input(node, 6) else 1
                learnt.append(helper.make_tensor_value_info(node.output[0], elem, list(shape)))
        if not learnt:
            return inferred, shapes
        light.graph.value_info.extend(learnt)
    return inferred, shapes


def _has_input(node: Any, index: int) -> bool:
    return index < len(node.input) and bool(node.input[index])


def _elem_types(graph: Any) -> dict[str, int]:
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def _gemm_shape(node: Any, shapes: dict[str, tuple[int, ...] | None], a: int, b: int) -> tuple[int, ...] | None:
    left, right = shapes.get(node.input[a]), shapes.get(node.input[b])
    if left is None or right is None or len(left) != 2 or len(right) != 2:
        return None
    rows = left[1] if _attr(node, "transA", 0) else left[0]
    cols = right[0] if _attr(node, "transB", 0) else right[1]
    return (rows, cols)


def _pooled_shape(node: Any, shapes: dict[str, tuple[int, ...] | None]) -> tuple[int, ...] | None:
    data = shapes.get(node.input[0])
    if data is None or len(data) < 3:
        return None
    if _attr(node, "channels_last", 0):
        return (data[0], *[1] * (len(data) - 2), data[-1])
    return (data[0], data[1], *[1] * (len(data) - 2))


def _broadcast_shape(node: Any, shapes: dict[str, tuple[int, ...] | None]) -> tuple[int, ...] | None:
    left, right = shapes.get(node.input[0]), shapes.get(node.input[3]) if len(node.input) > 3 else None
    if left is None or right is None:
        return None
    try:
        return tuple(int(d) for d in np.broadcast_shapes(left, right))
    except ValueError:
        return None


CONTRIB_SHAPES = {
    "QGemm": lambda node, shapes: _gemm_shape(node, shapes, 0, 3),
    "QLinearGlobalAveragePool": _pooled_shape,
    "QLinearAdd": _broadcast_shape,
    "QLinearMul": _broadcast_shape,
    "QLinearSigmoid": lambda node, shapes: shapes.get(node.input[0]),
    "QLinearLeakyRelu": lambda node, shapes: shapes.get(node.input[0]),
}


def _known_shapes(graph: Any) -> dict[str, tuple[int, ...] | None]:
    shapes: dict[str, tuple[int, ...] | None] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            shapes[value.name] = None
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        shapes[value.name] = None if any(d is None for d in dims) else tuple(int(d) for d in dims)
    for tensor in graph.initializer:
        shapes[tensor.name] = tuple(int(d) for d in tensor.dims)
    return shapes


def _attr(node: Any, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _node_macs(node: Any, shapes: dict[str, tuple[int, ...] | None]) -> int | None:
    """MACs of one node; 0 for ops that are not counted; None when a needed shape is unknown."""
    op = node.op_type

    def shape(index: int) -> tuple[int, ...] | None:
        return shapes.get(node.input[index]) if index < len(node.input) and node.input[index] else None

    out = shapes.get(node.output[0]) if node.output else None
    if op in CONV_OPS:
        weight = shape(CONV_OPS[op][1])
        return None if out is None or weight is None else prod(out) * prod(weight[1:])
    if op == "ConvTranspose":
        data, weight = shape(0), shape(1)
        return None if data is None or weight is None else prod(data) * prod(weight[1:])
    if op in GEMM_OPS:
        a = shape(GEMM_OPS[op][0])
        if out is None or a is None or len(a) != 2:
            return None
        reduction = a[0] if _attr(node, "transA", 0) else a[1]
        return prod(out) * reduction
    if op in MATMUL_OPS:
        a = shape(MATMUL_OPS[op][0])
        return None if out is None or a is None or not a else prod(out) * a[-1]
    if op == "MatMulNBits":
        return None if out is None else prod(out) * _attr(node, "K", 0)
    return 0


def torch_macs(module: Any, args: list[Any]) -> MacCount:
    """MACs of one real run of ``module(*args)``, counted by ``torch.utils.flop_counter``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            module(*args)
    except Exception as exc:  # noqa: BLE001 - a model the counter cannot follow is "not computable"
        return MacCount(None, f"not computable: torch's flop counter failed ({type(exc).__name__})")
    return MacCount(
        int(counter.get_total_flops()) // 2,
        "counted by torch.utils.flop_counter on one batch-1 run (conv, matmul, attention)",
    )


def per_sample_shapes(feeds: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Shapes of a batch-1 feed, as the ONNX counter wants them."""
    return {name: tuple(int(d) for d in array.shape) for name, array in feeds.items()}
