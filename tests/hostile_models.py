"""Submissions a student who wants the points without the work could build, from the hw2 staff
solution (found by a hostile review of the grader; each is graded in tests/test_hostile_outputs.py).

Every builder copies the solution folder to ``out`` and rewrites its models with onnx.helper.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SOLUTION = Path(__file__).resolve().parent.parent / "reference" / "solutions" / "hw2-quantization-pruning"


def _start(out: Path) -> onnx.ModelProto:
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(SOLUTION, out)
    return onnx.load(str(SOLUTION / "baseline.onnx"))


def _save(base: onnx.ModelProto, graph: onnx.GraphProto, path: Path, opsets: list | None = None) -> None:
    model = helper.make_model(graph, opset_imports=opsets or list(base.opset_import))
    model.ir_version = base.ir_version
    onnx.save(model, str(path))


def _random_int8(shape: tuple[int, int], name: str) -> list[onnx.TensorProto]:
    """An untrained int8 weight with 60% exact zeros: 'quantized and pruned', and useless."""
    rng = np.random.default_rng(0)
    codes = rng.integers(-127, 128, size=shape).astype(np.int8)
    codes[rng.random(codes.shape) < 0.6] = 0
    return [
        numpy_helper.from_array(codes, f"{name}_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), f"{name}_s"),
    ]


def _junk_logits(name: str = "logits") -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w"]),
        helper.make_node("Reshape", ["input", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], [name]),
    ]
    return nodes, [*_random_int8((64, 10), "w"), numpy_helper.from_array(np.array([0, 64], np.int64), "flat_shape")]


def decoy_first_output(out: Path) -> Path:
    """Both models' first output is the input's mean (any model computes it exactly); the logits
    come second, and the candidate's are an untrained random int8 matmul."""
    base = _start(out)
    g = base.graph
    aux = [helper.make_node("ReduceMean", ["input"], ["aux"], axes=[2, 3], keepdims=0)]
    aux_out = helper.make_tensor_value_info("aux", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph([*aux, *g.node], "b", list(g.input), [aux_out, *g.output], list(g.initializer))
    _save(base, graph, out / "baseline.onnx")
    nodes, inits = _junk_logits()
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])
    _save(
        base, helper.make_graph([*aux, *nodes], "c", list(g.input), [aux_out, logits], inits), out / "compressed.onnx"
    )
    return out


def offset_scores(out: Path, offset: float = 1000.0) -> Path:
    """Both models answer [N, 10, 1] scores plus a large constant; the candidate is untrained."""
    base = _start(out)
    g = base.graph
    tail_inits = [
        numpy_helper.from_array(np.array([2], np.int64), "ax"),
        numpy_helper.from_array(np.array(offset, np.float32), "off"),
    ]

    def tail(name: str) -> list[onnx.NodeProto]:
        return [
            helper.make_node("Unsqueeze", [name, "ax"], [name + "_3d"]),
            helper.make_node("Add", [name + "_3d", "off"], ["scores"]),
        ]

    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10, 1])
    graph = helper.make_graph(
        [*g.node, *tail(g.output[0].name)], "b", list(g.input), [scores], [*g.initializer, *tail_inits]
    )
    _save(base, graph, out / "baseline.onnx")
    nodes, inits = _junk_logits()
    _save(
        base,
        helper.make_graph([*nodes, *tail("logits")], "c", list(g.input), [scores], [*inits, *tail_inits]),
        out / "compressed.onnx",
    )
    return out


def hidden_fp32(out: Path, variant: str) -> Path:
    """The fp32 baseline itself as the candidate, with its weights where the evidence might not
    look (``if``: inside an If body reading the outer initializers; ``ops``: FusedConv and Einsum
    instead of Conv and Gemm), next to a live int8, 60%-zero decoy that contributes nothing."""
    base = _start(out)
    g = base.graph
    logits = g.output[0].name
    decoy_inits = [
        *_random_int8((64, 512), "decoy"),
        numpy_helper.from_array(np.array([0, 64], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    decoy = [
        helper.make_node("DequantizeLinear", ["decoy_q", "decoy_s"], ["decoy_w"]),
        helper.make_node("Reshape", ["input", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "decoy_w"], ["decoy_out"]),
        helper.make_node("ReduceSum", ["decoy_out"], ["decoy_sum"], keepdims=0),
        helper.make_node("Mul", ["decoy_sum", "zero"], ["decoy_zero"]),
    ]
    opsets = list(base.opset_import)
    if variant == "if":
        body = helper.make_graph(
            list(g.node), "then", [], [helper.make_tensor_value_info(logits, TensorProto.FLOAT, None)]
        )
        nodes = [
            *decoy,
            helper.make_node("IsNaN", ["decoy_zero"], ["nan"]),
            helper.make_node("Not", ["nan"], ["cond"]),
            helper.make_node("If", ["cond"], ["hidden_logits"], then_branch=body, else_branch=body),
        ]
    else:
        nodes = []
        for n in g.node:
            if n.op_type == "Conv":
                fused = helper.make_node(
                    "FusedConv", list(n.input), list(n.output), domain="com.microsoft", name=n.name
                )
                fused.attribute.extend(n.attribute)
                nodes.append(fused)
            elif n.op_type == "Gemm":
                trans_b = [a.i for a in n.attribute if a.name == "transB"]
                equation = "nk,ok->no" if trans_b and trans_b[0] else "nk,ko->no"
                nodes += [
                    helper.make_node("Einsum", [n.input[0], n.input[1]], [n.output[0] + "_mm"], equation=equation),
                    helper.make_node("Add", [n.output[0] + "_mm", n.input[2]], [n.output[0]]),
                ]
            else:
                nodes.append(n)
        nodes[-1].output[0] = "hidden_logits"
        nodes += decoy
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    nodes.append(helper.make_node("Add", ["hidden_logits", "decoy_zero"], [logits]))
    graph = helper.make_graph(nodes, "hidden", list(g.input), list(g.output), [*g.initializer, *decoy_inits])
    _save(base, graph, out / "compressed.onnx", opsets)
    return out


def int8_pairs(out: Path, pieces: int = 2) -> Path:
    """Every weight (60% pruned) stored as ``pieces`` int8 tensors summed: 8·pieces-bit weights."""
    base = _start(out)
    g = base.graph
    weights = {t.name: numpy_helper.to_array(t) for t in g.initializer if len(t.dims) > 1}
    cut = np.quantile(np.concatenate([np.abs(w).ravel() for w in weights.values()]), 0.6)
    inits, pre = [], []
    for t in g.initializer:
        if t.name not in weights:
            inits.append(t)
            continue
        w = weights[t.name].astype(np.float64)
        w[np.abs(w) < cut] = 0
        scale, rest, terms = np.abs(w).max() / 127.0, w, []
        for k in range(pieces):
            step = scale / 256.0**k
            q = np.clip(np.round(rest / step), -128, 127).astype(np.int8)
            rest = rest - q.astype(np.float64) * step
            inits += [
                numpy_helper.from_array(q, f"{t.name}_q{k}"),
                numpy_helper.from_array(np.array(step, np.float32), f"{t.name}_s{k}"),
            ]
            pre.append(helper.make_node("DequantizeLinear", [f"{t.name}_q{k}", f"{t.name}_s{k}"], [f"{t.name}_d{k}"]))
            terms.append(f"{t.name}_d{k}")
        pre.append(helper.make_node("Sum", terms, [t.name]))
    _save(
        base, helper.make_graph([*pre, *g.node], "pairs", list(g.input), list(g.output), inits), out / "compressed.onnx"
    )
    return out


def padded_external_baseline(out: Path) -> Path:
    """The baseline saved with external data, and 8 MiB no tensor reads appended to that file."""
    base = _start(out)
    os.remove(out / "baseline.onnx")
    onnx.save(
        base,
        str(out / "baseline.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="baseline.data",
        size_threshold=0,
    )
    with open(out / "baseline.data", "ab") as handle:
        handle.write(np.random.default_rng(0).bytes(8 * 2**20))
    return out
