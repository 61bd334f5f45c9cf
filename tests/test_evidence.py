"""Evidence readers (grader.evidence): what a model file itself proves about its weights.

Models come from the same recipes the staff solution uses (tests.builders, reference.compress),
so a flawed model differs from the correct one in exactly the flaw under test.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.utils._pytree import tree_map

from grader.checks.shared import largest_float_weights, layer_sparsity
from grader.contracts.figures import EvidenceSummary
from grader.contracts.observations import ModelEvidence, TensorEvidence
from grader.grading.figures import effective_sparsity, summarize
from grader.worker.evidence.onnx_graph import onnx_evidence
from grader.worker.evidence.torch_model import exported_program_evidence, module_evidence, stored_tensor_evidence
from reference import compress
from tests.builders import TinyCNN, export, prune_to, quantize, trained_tiny

EXAMPLE = (torch.zeros(1, 1, 8, 8),)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _onnx(path: Path) -> tuple[ModelEvidence, EvidenceSummary]:
    evidence = onnx_evidence(onnx.load(str(path)))
    return evidence, summarize(evidence)


@pytest.fixture(scope="module")
def trained() -> TinyCNN:
    return trained_tiny(epochs=1)  # the weights only need to be realistic, not accurate


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, trained: TinyCNN) -> dict[str, Path]:
    """Every ONNX variant the tests judge, built once (a few seconds in all)."""
    d = tmp_path_factory.mktemp("evidence")
    out = {"fp32": export(trained, d / "fp32.onnx")}
    out["qoperator"] = quantize(out["fp32"], d / "qoperator.onnx", fmt="qoperator")
    out["qdq"] = quantize(out["fp32"], d / "qdq.onnx", fmt="qdq")
    out["fake"] = compress.fake_quantize_onnx(out["fp32"], d / "fake.onnx")
    out["pruned"] = export(prune_to(copy.deepcopy(trained), 0.6, finetune_epochs=0), d / "pruned.onnx")
    out["pruned_q"] = quantize(out["pruned"], d / "pruned_q.onnx")

    # "pruning" that leaves tiny non-zero values: the same weights as the pruned model, but 1e-8
    near = copy.deepcopy(trained)
    masks = compress.prune_global_magnitude(copy.deepcopy(trained), 0.6)
    with torch.no_grad():
        for name, module in near.named_modules():
            if name in masks:
                module.weight[~masks[name]] = 1e-8
    out["near_zero"] = export(near, d / "near_zero.onnx")
    return out


# --------------------------------------------------------------------------- ONNX


def test_fp32_model_is_not_quantized_and_counts_every_parameter(models: dict[str, Path], trained: TinyCNN) -> None:
    evidence, summary = _onnx(models["fp32"])
    assert summary.quantized_fraction == 0.0 and summary.quantized_elements == 0
    assert summary.min_quantized_bits is None
    assert summary.params_total == _params(trained) == 12730
    weights = {w.name: w for w in evidence.weights}
    assert set(weights) == {"conv1.weight", "conv2.weight", "head.weight"}
    assert summary.weight_elements == sum(m.weight.numel() for m in (trained.conv1, trained.conv2, trained.head))
    assert all(w.stored_dtype == "float32" and w.bits == 32 and w.prunable for w in weights.values())
    assert weights["head.weight"].shape == [10, 1024] and weights["head.weight"].layer == "Gemm"
    assert summary.sparsity == 0.0 and evidence.notes == []


def test_qoperator_int8_model_counts_as_quantized(models: dict[str, Path], trained: TinyCNN) -> None:
    evidence, summary = _onnx(models["qoperator"])
    assert "QLinearConv" in evidence.op_types
    assert summary.quantized_fraction >= 0.99
    assert summary.min_quantized_bits == 8
    assert all(w.stored_dtype == "int8" and w.bits == 8 for w in evidence.weights)
    assert {w.layer for w in evidence.weights} <= {"QLinearConv", "QGemm"}
    # int8 weights + int32 biases are the same parameters; scales and zero points are not
    assert summary.params_total == _params(trained)
    assert largest_float_weights(evidence) == []


def test_qdq_int8_model_counts_as_quantized(models: dict[str, Path], trained: TinyCNN) -> None:
    evidence, summary = _onnx(models["qdq"])
    assert "DequantizeLinear" in evidence.op_types and "Conv" in evidence.op_types
    assert "QLinearConv" not in evidence.op_types  # really the QDQ form
    assert summary.quantized_fraction >= 0.99 and summary.min_quantized_bits == 8
    assert all(w.stored_dtype == "int8" for w in evidence.weights)
    assert summary.params_total == _params(trained)
    assert not any("fake quantization" in n for n in evidence.notes)


def test_fake_quantized_model_counts_as_float(models: dict[str, Path]) -> None:
    evidence, summary = _onnx(models["fake"])
    assert evidence.op_types.get("QuantizeLinear", 0) == 3 and evidence.op_types.get("DequantizeLinear", 0) == 3
    assert summary.quantized_fraction == 0.0 and summary.min_quantized_bits is None
    assert all(w.stored_dtype == "float32" for w in evidence.weights)
    assert any("fake quantization" in note for note in evidence.notes)
    assert [w.name for w in largest_float_weights(evidence, 1)] == ["head.weight"]


def test_pruned_then_quantized_model_keeps_its_zeros(models: dict[str, Path]) -> None:
    _, pruned = _onnx(models["pruned"])
    evidence, summary = _onnx(models["pruned_q"])
    assert pruned.sparsity == pytest.approx(0.6, abs=0.002)
    assert summary.quantized_fraction >= 0.99
    assert summary.sparsity >= 0.59
    # the quantized zeros are the very zeros pruning made (symmetric int8: zero point 0)
    assert summary.prunable_zeros == pruned.prunable_zeros
    # independent count straight from the file: symmetric int8 weights have zero point 0
    int8 = {
        t.name: numpy_helper.to_array(t)
        for t in onnx.load(str(models["pruned_q"])).graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2
    }
    assert sum(int(np.count_nonzero(a == 0)) for a in int8.values()) == summary.prunable_zeros
    per_layer = {row["name"]: row["sparsity"] for row in layer_sparsity(evidence)}
    assert set(per_layer) == set(int8)


def test_tiny_values_are_not_zeros_but_are_reported_as_near_zero(models: dict[str, Path]) -> None:
    _, summary = _onnx(models["near_zero"])
    assert summary.sparsity == 0.0
    assert summary.near_zero_fraction > 0.5
    assert summary.near_zero_fraction == pytest.approx(0.6, abs=0.01)


def test_unused_initializer_and_dead_node_are_not_counted(models: dict[str, Path]) -> None:
    proto = onnx.load(str(models["fp32"]))
    before = summarize(onnx_evidence(proto))
    weight = next(t for t in proto.graph.initializer if t.name == "head.weight")
    copy_of_weight = numpy_helper.from_array(numpy_helper.to_array(weight).copy(), "head.weight_fp32_copy")
    proto.graph.initializer.append(copy_of_weight)
    gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")
    # a dead branch that would be a valid second head: Flatten output x copy^T -> [N, 10]
    proto.graph.node.extend(
        [
            helper.make_node("Transpose", ["head.weight_fp32_copy"], ["copy_t"], perm=[1, 0], name="dead_transpose"),
            helper.make_node("MatMul", [gemm.input[0], "copy_t"], ["dead_out"], name="dead_matmul"),
        ]
    )
    assert "dead_out" not in {o.name for o in proto.graph.output}
    onnx.checker.check_model(proto, full_check=True)
    evidence = onnx_evidence(proto)
    summary = summarize(evidence)
    assert "head.weight_fp32_copy" not in {w.name for w in evidence.weights}
    assert summary.params_total == before.params_total
    assert summary.weight_elements == before.weight_elements
    assert "MatMul" not in evidence.op_types and "Transpose" not in evidence.op_types

    # the same copy, once the graph really uses it, does count: the test can tell the difference
    proto.graph.output.append(helper.make_tensor_value_info("dead_out", TensorProto.FLOAT, ["N", 10]))
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, second = session.run(None, {proto.graph.input[0].name: np.ones((2, 1, 8, 8), np.float32)})
    bias = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "head.bias"))
    assert np.allclose(second + bias, logits, atol=1e-4)  # the branch really computes the head
    used = onnx_evidence(proto)
    assert "head.weight_fp32_copy" in {w.name for w in used.weights}
    assert summarize(used).params_total == before.params_total + 10 * 1024


def _dq_matmul_model(weights: np.ndarray, zero_points: np.ndarray, axis: int, op: str) -> onnx.ModelProto:
    """DequantizeLinear(axis) on a stored uint8 weight, feeding a MatMul or Conv."""
    scales = np.full(zero_points.shape, 0.05, np.float32)
    inits = [
        numpy_helper.from_array(weights, "w_q"),
        numpy_helper.from_array(scales, "w_scale"),
        numpy_helper.from_array(zero_points, "w_zp"),
    ]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], axis=axis)]
    if op == "MatMul":
        k, n = weights.shape
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["y"]))
        x, y = [1, k], [1, n]
    else:
        nodes.append(helper.make_node("Conv", ["x", "w"], ["y"]))
        x, y = [1, weights.shape[1], 4, 4], [1, weights.shape[0], 4 - weights.shape[2] + 1, 4 - weights.shape[3] + 1]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # a graph ORT accepts
    return model


def _per_channel_uint8(shape: tuple[int, ...], axis: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """uint8 weights whose channels each hit their own (non-zero) zero point a known number of times."""
    rng = np.random.default_rng(seed)
    zero_points = np.array([100, 128, 140, 3][: shape[axis]], np.uint8)
    weights = rng.integers(150, 255, size=shape, dtype=np.uint8)  # never equal to any zero point
    moved = np.moveaxis(weights, axis, 0)  # a view: writes land in ``weights``
    expected = 0
    for channel in range(shape[axis]):
        flat = moved[channel].reshape(-1)
        hits = channel + 2
        flat[:hits] = zero_points[channel]
        # also plant the *other* channels' zero points, which must not count here
        flat[hits : hits + 2] = zero_points[(channel + 1) % shape[axis]]
        moved[channel] = flat.reshape(moved[channel].shape)
        expected += hits
    return weights, zero_points, expected


@pytest.mark.parametrize(
    ("op", "shape", "axis"), [("MatMul", (6, 3), 1), ("MatMul", (3, 5), 0), ("Conv", (4, 2, 3, 3), 0)]
)
def test_per_channel_uint8_zero_points_count_per_channel(op: str, shape: tuple[int, ...], axis: int) -> None:
    weights, zero_points, expected = _per_channel_uint8(shape, axis)
    evidence = onnx_evidence(_dq_matmul_model(weights, zero_points, axis, op))
    (w,) = evidence.weights
    assert w.name == "w_q" and w.stored_dtype == "uint8" and w.bits == 8 and w.quantized
    assert w.zeros == expected
    assert summarize(evidence).quantized_fraction == 1.0
    assert summarize(evidence).params_total == weights.size  # scales and zero points are not parameters


def test_per_column_zero_points_of_qlinearmatmul_count_per_column() -> None:
    """QOperator ops carry the zero points themselves; B of a MatMul is [K, N], one per column."""
    weights, zero_points, expected = _per_channel_uint8((6, 3), axis=1)
    scalar = {"a_scale": np.float32(0.1), "a_zp": np.uint8(128), "y_scale": np.float32(0.1), "y_zp": np.uint8(128)}
    inits = [numpy_helper.from_array(np.array(v), k) for k, v in scalar.items()] + [
        numpy_helper.from_array(weights, "b"),
        numpy_helper.from_array(np.full(3, 0.05, np.float32), "b_scale"),
        numpy_helper.from_array(zero_points, "b_zp"),
    ]
    node = helper.make_node("QLinearMatMul", ["a", "a_scale", "a_zp", "b", "b_scale", "b_zp", "y_scale", "y_zp"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 6])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"a": np.full((1, 6), 130, np.uint8)})[0].shape == (1, 3)  # ORT runs it per column
    (w,) = onnx_evidence(model).weights
    assert w.quantized and w.zeros == expected


def test_effective_sparsity_credits_structured_pruning(tmp_path: Path) -> None:
    torch.manual_seed(0)
    wide = summarize(onnx_evidence(onnx.load(str(export(TinyCNN(width=16), tmp_path / "wide.onnx")))))
    narrow = summarize(onnx_evidence(onnx.load(str(export(TinyCNN(width=8), tmp_path / "narrow.onnx")))))
    assert narrow.sparsity == 0.0  # no zeros at all: the channels are simply gone
    expected = 1 - narrow.prunable_elements / wide.prunable_elements
    assert effective_sparsity(narrow, wide) == pytest.approx(expected)
    assert 0.5 <= effective_sparsity(narrow, wide) <= 0.6
    assert effective_sparsity(narrow, None) == 0.0  # without a baseline nothing can be credited
    assert effective_sparsity(wide, wide) == 0.0


def test_effective_sparsity_adds_zeros_to_removed_channels() -> None:
    baseline = EvidenceSummary(1000, 0, None, 1000, 0, 0, 1000)
    half_width_half_zero = EvidenceSummary(500, 0, None, 500, 250, 0, 500)
    assert effective_sparsity(half_width_half_zero, baseline) == pytest.approx(0.75)


# --------------------------------------------------------------------------- torch


def test_module_evidence_on_a_plain_module(trained: TinyCNN) -> None:
    evidence = module_evidence(trained, "module")
    summary = summarize(evidence)
    assert summary.params_total == _params(trained)
    assert {(w.name, w.layer) for w in evidence.weights} == {
        ("conv1.weight", "Conv2d"),
        ("conv2.weight", "Conv2d"),
        ("head.weight", "Linear"),
    }
    assert summary.quantized_fraction == 0.0 and summary.sparsity == 0.0
    pruned = summarize(module_evidence(prune_to(copy.deepcopy(trained), 0.5, finetune_epochs=0), "module"))
    assert pruned.sparsity == pytest.approx(0.5, abs=0.001)


class _WithUnused(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.randn(32, 32))  # registered, never used by forward


def test_exported_program_counts_only_weights_the_graph_uses() -> None:
    torch.manual_seed(0)
    model = _WithUnused().eval()
    program = torch.export.export(model, EXAMPLE)
    assert "unused" in program.state_dict  # export keeps it...
    evidence = exported_program_evidence(program)
    summary = summarize(evidence)
    assert "unused" not in {w.name for w in evidence.weights}  # ...the evidence does not
    assert summary.params_total == _params(model) - 32 * 32 == 12730
    assert {(w.name, w.layer) for w in evidence.weights} == {
        ("conv1.weight", "conv2d"),
        ("conv2.weight", "conv2d"),
        ("head.weight", "linear"),
    }
    assert evidence.op_types.get("conv2d") == 2


# A minimal weight-only int8 tensor subclass, in the style of torchao: it reports float32 (so
# ``.dtype`` alone would call it a float weight) but stores int8 data with per-row zero points.
class Int8Weight(torch.Tensor):
    @staticmethod
    def __new__(cls, qdata: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor):  # noqa: ANN204
        return torch.Tensor._make_wrapper_subclass(cls, qdata.shape, dtype=torch.float32, device=qdata.device)

    def __init__(self, qdata: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        self.qdata, self.scale, self.zero_point = qdata, scale, zero_point

    def __tensor_flatten__(self):  # noqa: ANN204
        return ["qdata", "scale", "zero_point"], None

    @staticmethod
    def __tensor_unflatten__(inner, ctx, outer_size, outer_stride):  # noqa: ANN001, ANN205
        return Int8Weight(inner["qdata"], inner["scale"], inner["zero_point"])

    def dequantize(self) -> torch.Tensor:
        shape = (-1,) + (1,) * (self.qdata.dim() - 1)
        return (self.qdata.float() - self.zero_point.view(shape).float()) * self.scale.view(shape)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        if func is torch.ops.aten.detach.default:
            return args[0]
        unwrap = lambda t: t.dequantize() if isinstance(t, Int8Weight) else t  # noqa: E731
        return func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs or {}))


def test_stored_tensor_evidence_judges_a_subclass_by_what_it_stores() -> None:
    qdata = torch.tensor([[3, 3, 5, 1], [-2, 7, 7, 7], [0, 1, 7, 3]], dtype=torch.int8)
    zero_point = torch.tensor([3, 7, 0], dtype=torch.int8)
    weight = Int8Weight(qdata, torch.full((3,), 0.1), zero_point)
    assert weight.dtype == torch.float32  # what a dtype check would see
    out = nn.functional.linear(torch.ones(1, 4), weight)  # a working weight, not a mock
    assert torch.allclose(out, nn.functional.linear(torch.ones(1, 4), weight.dequantize()))

    ev = stored_tensor_evidence("head.weight", weight, "linear", prunable=True, dequantized=False)
    assert ev.stored_dtype == "int8" and ev.bits == 8 and ev.quantized
    assert ev.shape == [3, 4] and ev.numel == 12
    # row 0 holds its zero point 3 twice, row 1 holds 7 three times, row 2 holds 0 once; the
    # other rows' zero points (3 and 7 in row 2) must not count, and neither does a literal 0
    # outside row 2: against a single zero point of 0 the count would be 1, against 3 it would be 3
    assert ev.zeros == 2 + 3 + 1
    assert ev.distinct == int(torch.unique(qdata).numel())


def test_plain_int8_tensor_is_not_quantized_unless_the_graph_dequantizes_it() -> None:
    raw = torch.tensor([[0, 1], [2, 0]], dtype=torch.int8)
    assert not stored_tensor_evidence("idx", raw, "embedding", prunable=False, dequantized=False).quantized
    assert stored_tensor_evidence("w", raw, "linear", prunable=True, dequantized=True).quantized
    floats = stored_tensor_evidence("w", raw.float(), "linear", prunable=True, dequantized=True)
    assert not floats.quantized and floats.stored_dtype == "float32" and floats.zeros == 2


def test_module_evidence_sees_through_a_subclass_weight() -> None:
    layer = nn.Linear(4, 3, bias=False)
    qdata = torch.tensor([[0, 0, 5, 1], [-2, 7, 0, 7], [0, 1, 7, 3]], dtype=torch.int8)
    stored = Int8Weight(qdata, torch.full((3,), 0.1), torch.zeros(3, dtype=torch.int8))
    layer.weight = nn.Parameter(stored, requires_grad=False)
    evidence = module_evidence(layer, "module")
    (w,) = evidence.weights
    assert w.stored_dtype == "int8" and w.quantized and w.zeros == 4
    assert summarize(evidence).quantized_fraction == 1.0


# --------------------------------------------------------------------------- MACs, ONNX validity, palettes


def _tiny_macs(width: int = 16) -> int:
    """TinyCNN by hand: two 3x3 convs at 8x8, then a Linear over width * 64 features."""
    return 64 * (1 * width * 9) + 64 * (width * width * 9) + width * 64 * 10


def test_onnx_and_torch_count_the_same_macs(models: dict[str, Path], trained: TinyCNN) -> None:
    from grader.worker.evidence.flops import onnx_macs, torch_macs

    shapes = {"input": (1, 1, 8, 8)}
    fp32 = onnx_macs(onnx.load(str(models["fp32"])), shapes)
    assert fp32.macs == _tiny_macs()
    assert torch_macs(trained, [torch.zeros(1, 1, 8, 8)]).macs == _tiny_macs()
    # quantized graphs (QLinearConv, QGemm from onnxruntime's contrib domain) count the same work
    assert onnx_macs(onnx.load(str(models["qoperator"])), shapes).macs == _tiny_macs()
    assert onnx_macs(onnx.load(str(models["qdq"])), shapes).macs == _tiny_macs()
    assert onnx_macs(onnx.load(str(models["fp32"])), {"input": (4, 1, 8, 8)}).macs == 4 * _tiny_macs()


def test_macs_are_not_computable_when_shapes_are_unknown() -> None:
    from grader.worker.evidence.flops import onnx_macs

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "K"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(np.zeros((100, 3), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    unknown = onnx_macs(model, {})
    assert unknown.macs is None and "MatMul" in unknown.note
    assert onnx_macs(model, {"x": (1, 100)}).macs == 300


def test_onnx_facts_report_opset_and_checker_complaints(models: dict[str, Path], tmp_path: Path) -> None:
    from grader.worker.evidence.onnx_validity import onnx_facts

    good = onnx_facts(onnx.load(str(models["fp32"])), models["fp32"])
    assert good.opset == 17 and good.checker_error is None and good.shape_inference_error is None
    proto = onnx.load(str(models["fp32"]))
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7  # declares [N, 7]; the graph makes [N, 10]
    path = tmp_path / "wrong_shape.onnx"
    onnx.save(proto, str(path))
    bad = onnx_facts(proto, path)
    assert bad.shape_inference_error and "7" in bad.shape_inference_error and bad.checker_error is None


def test_float_noise_around_a_few_centres_is_counted_exactly_but_diagnosed() -> None:
    from grader.worker.evidence.tensors import tensor_evidence

    rng = np.random.default_rng(0)
    centres = np.linspace(-1, 1, 16).astype(np.float32)
    clustered = centres[rng.integers(0, 16, 4096)]
    exact = tensor_evidence("w", clustered, "Conv", prunable=True, quantized=False)
    assert exact.distinct == 16 and exact.distinct_within_noise is None  # few values: nothing to diagnose
    noisy = tensor_evidence(
        "w", clustered + rng.normal(0, 1e-6, 4096).astype(np.float32), "Conv", prunable=True, quantized=False
    )
    assert noisy.distinct > 1000  # never merged: float noise is not clustering
    assert noisy.distinct_within_noise == 16


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int8, np.uint8, np.int32])
def test_counts_from_one_sort_equal_np_unique_and_the_merged_count_of_a_fresh_sort(dtype: type) -> None:
    """The distinct count comes from the values sorted once, as the merged count does: it must read
    exactly as np.unique does, with NaNs (one value), -0.0 next to 0.0, infinities and repeats."""
    from grader.worker.evidence.tensors import NOISE_RELATIVE, _sorted_floats, distinct_count, distinct_within_noise

    rng = np.random.default_rng(1)
    floating = np.issubdtype(dtype, np.floating)
    cases = [rng.normal(0, 1, 3000) if floating else rng.integers(-100, 100, 3000), np.zeros(7), np.arange(1)]
    if floating:
        cases += [
            np.array([np.nan, 0.0, -0.0, 1.0, np.nan, np.inf, -np.inf, np.inf, 1.0]),
            np.array([np.nan, np.nan]),
            np.append(np.linspace(-1, 1, 300), np.nan),  # > 256 distinct with a NaN and no inf: no merged count
            np.linspace(-1, 1, 16)[rng.integers(0, 16, 2000)] + rng.normal(0, 1e-7, 2000),
        ]
    for case in cases:
        values = np.asarray(case).astype(dtype).reshape(-1, 1)
        ordered = _sorted_floats(values)
        assert (ordered is not None) == floating
        assert distinct_count(values, ordered) == np.unique(values).size
        if floating:
            wide = np.sort(values.astype(np.float64).reshape(-1))
            step = float(np.abs(wide).max()) * NOISE_RELATIVE
            fresh = int(np.count_nonzero(np.diff(wide) > step)) + 1 if step and np.isfinite(step) else None
            assert distinct_within_noise(values, ordered) == distinct_within_noise(values) == fresh


def test_palettized_size_is_log2_k_bits_per_weight_plus_the_codebook() -> None:
    from grader.grading.figures import palettized_bytes

    def evidence(distinct: int) -> ModelEvidence:
        w = TensorEvidence(
            name="w",
            layer="Conv",
            stored_dtype="float32",
            bits=32,
            shape=[1000],
            numel=1000,
            zeros=0,
            distinct=distinct,
            quantized=False,
            prunable=True,
        )
        return ModelEvidence(format="onnx", params_total=1010, weights=[w])  # + 10 bias values

    assert palettized_bytes(evidence(16)) == (1000 * 4 + 16 * 32 + 10 * 32) / 8
    assert palettized_bytes(evidence(3)) == (1000 * 2 + 3 * 32 + 10 * 32) / 8
    assert palettized_bytes(evidence(1000)) == 1010 * 4  # not palettizable: stored as it is


# --------------------------------------------------------------------------- evidence from what executes (issue #13)


def _route_weights_through_mul(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Every conv / gemm weight multiplied by a constant 1.0 before its op: the same model."""
    proto = copy.deepcopy(proto)
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    proto.graph.initializer.append(one)
    nodes = []
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            routed = node.input[1] + "_routed"
            nodes.append(helper.make_node("Mul", [node.input[1], "one"], [routed]))
            node.input[1] = routed
        nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def test_a_float_weight_routed_through_a_constant_computation_is_still_a_float_weight(
    models: dict[str, Path],
) -> None:
    """An uncompressed model whose weights pass through Mul(w, 1.0) next to a small int8 decoy."""
    proto = _route_weights_through_mul(onnx.load(str(models["fp32"])))
    decoy = numpy_helper.from_array(np.zeros((4, 4), np.int8), "decoy_q")
    decoy_scale = numpy_helper.from_array(np.array(0.1, np.float32), "decoy_scale")
    proto.graph.initializer.extend([decoy, decoy_scale])
    proto.graph.node.extend([helper.make_node("DequantizeLinear", ["decoy_q", "decoy_scale"], ["decoy"])])  # dead
    evidence = onnx_evidence(proto)
    summary = summarize(evidence)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: np.ones((2, 1, 8, 8), np.float32)})[0].shape == (2, 10)
    assert {w.name for w in evidence.weights} == {"conv1.weight", "conv2.weight", "head.weight"}
    assert all(w.stored_dtype == "float32" and not w.quantized for w in evidence.weights)
    assert summary.quantized_fraction == 0.0 and summary.params_total == 12730


def test_a_routed_float_weight_beside_a_live_int8_decoy_reads_float() -> None:
    """Conv(x, DequantizeLinear(int8 decoy) + Mul(fp32 weight, 1)): stored mostly as float."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(8, 1, 3, 3)).astype(np.float32)
    inits = [
        numpy_helper.from_array(weight, "w_fp32"),
        numpy_helper.from_array(np.zeros((8, 1, 3, 3), np.int8), "w_decoy"),
        numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_decoy", "scale"], ["decoy"]),
        helper.make_node("Mul", ["w_fp32", "one"], ["w_routed"]),
        helper.make_node("Add", ["decoy", "w_routed"], ["w"]),
        helper.make_node("Conv", ["x", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (w,) = onnx_evidence(model).weights
    assert not w.quantized and w.name == "w_fp32" and w.stored_dtype == "float32"
    assert w.shape == [8, 1, 3, 3] and w.distinct == np.unique(weight).size  # the values the conv uses


def test_a_routed_float_weight_in_an_exported_program_reads_float() -> None:
    class Routed(TinyCNN):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(nn.functional.conv2d(x, self.conv1.weight * 1.0, self.conv1.bias, padding=1))
            x = torch.relu(nn.functional.conv2d(x, self.conv2.weight * 1.0, self.conv2.bias, padding=1))
            return nn.functional.linear(x.flatten(1), self.head.weight.t().t(), self.head.bias)

    torch.manual_seed(0)
    model = Routed().eval()
    assert torch.allclose(model(EXAMPLE[0]), TinyCNN.forward(model, EXAMPLE[0]), atol=1e-6)
    evidence = exported_program_evidence(torch.export.export(model, EXAMPLE))
    assert {w.name for w in evidence.weights} == {"conv1.weight", "conv2.weight", "head.weight"}
    assert summarize(evidence).quantized_fraction == 0.0 and summarize(evidence).params_total == 12730


def _int4_per_channel(channels: int = 8, k: int = 32) -> tuple[onnx.ModelProto, np.ndarray]:
    """A MatMul weight stored as int4 codes (all 16 of them) with one scale per output channel."""
    rng = np.random.default_rng(1)
    codes = rng.integers(-8, 8, size=(k, channels)).astype(np.int8)
    codes[:16, :] = np.arange(-8, 8)[:, None]  # every code in every channel
    scales = (np.array([11, 13, 17, 19, 23, 29, 31, 37][:channels]) / 1000).astype(np.float32)  # no code x scale
    # product repeats across channels: only 0 is shared
    packed = helper.make_tensor("w_q", TensorProto.INT4, [k, channels], codes.reshape(-1).tolist())
    inits = [packed, numpy_helper.from_array(scales, "w_scale")]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], axis=1),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model, codes.astype(np.float32) * scales[None, :]


def test_per_channel_int4_counts_its_decoded_values_not_its_16_codes() -> None:
    model, decoded = _int4_per_channel()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    eye = np.eye(32, dtype=np.float32)
    assert np.allclose(np.concatenate([session.run(None, {"x": row[None]})[0] for row in eye]), decoded)
    (w,) = onnx_evidence(model).weights
    assert w.quantized and w.bits == 4 and w.stored_dtype == "int4"
    assert w.distinct == np.unique(decoded).size == 15 * 8 + 1  # 15 non-zero codes times 8 scales, and 0
    assert w.zeros == int(np.count_nonzero(decoded == 0))


def _pruned_matmul_model(path: Path, sparsity: float = 0.5) -> Path:
    """Linear layers on [batch, tokens, features]: exported as MatMul, which MatMulNBits replaces."""

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 96), nn.Linear(96, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x))).mean(1)

    torch.manual_seed(0)
    model = Tokens().eval()
    with torch.no_grad():
        for layer in (model.fc1, model.fc2):
            limit = layer.weight.abs().flatten().kthvalue(int(layer.weight.numel() * sparsity)).values
            layer.weight[layer.weight.abs() <= limit] = 0
    torch.onnx.export(model, (torch.randn(2, 7, 64),), str(path), dynamic_shapes=({0: torch.export.Dim("b")},))
    return path


@pytest.mark.parametrize("symmetric", [False, True])
def test_matmul_nbits_with_the_quantizers_defaults_reads_its_real_sparsity(tmp_path: Path, symmetric: bool) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    source = _pruned_matmul_model(tmp_path / "fp32.onnx")
    quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), is_symmetric=symmetric)
    quantizer.process()
    quantizer.model.save_model_to_file(str(tmp_path / "q4.onnx"), True)
    proto = onnx.load(str(tmp_path / "q4.onnx"))
    assert [n.op_type for n in proto.graph.node].count("MatMulNBits") == 2
    evidence = onnx_evidence(proto)
    summary = summarize(evidence)
    assert summary.quantized_fraction == 1.0 and summary.min_quantized_bits == 4
    assert summary.sparsity == pytest.approx(0.5, abs=0.01)
    assert summary.params_total == 64 * 96 + 96 + 96 * 10 + 10  # K x N codes (no padding) and the biases
    assert {tuple(w.shape) for w in evidence.weights} == {(96, 64), (10, 96)}


def test_matmul_nbits_decoding_matches_onnxruntime(tmp_path: Path) -> None:
    """The decoder against the runtime itself: A = identity makes MatMulNBits return its weight."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from grader.worker.evidence.onnx_graph import decode_matmul_nbits

    quantizer = MatMulNBitsQuantizer(onnx.load(str(_pruned_matmul_model(tmp_path / "fp32.onnx", 0.3))), block_size=32)
    quantizer.process()
    proto = quantizer.model.model
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in (n for n in proto.graph.node if n.op_type == "MatMulNBits"):
        k = next(a.i for a in node.attribute if a.name == "K")
        single = helper.make_graph(
            [node],
            "one",
            [helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, [k, k])],
            [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
            [t for t in proto.graph.initializer if t.name in node.input[1:]],
        )
        model = helper.make_model(single, opset_imports=list(proto.opset_import))
        model.ir_version = proto.ir_version
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        runtime = session.run(None, {node.input[0]: np.eye(k, dtype=np.float32)})[0]  # = W^T
        zp = inits.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        decoded = decode_matmul_nbits(node, inits[node.input[1]], inits[node.input[2]], zp)
        assert np.allclose(decoded.T, runtime, atol=1e-6)


def test_int8_embeddings_from_quantize_dynamic_count_as_quantized(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.head = nn.Embedding(500, 64), nn.Linear(64, 4)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.emb(ids).mean(1))

    torch.manual_seed(0)
    fp32 = tmp_path / "bag.onnx"
    torch.onnx.export(Bag().eval(), (torch.randint(0, 500, (2, 5)),), str(fp32))
    quantize_dynamic(
        str(fp32),
        str(tmp_path / "q.onnx"),
        op_types_to_quantize=["Gather", "MatMul", "Gemm"],
        weight_type=QuantType.QUInt8,
    )
    proto = onnx.load(str(tmp_path / "q.onnx"))
    assert "DequantizeLinear" in {n.op_type for n in proto.graph.node}
    evidence = onnx_evidence(proto)
    table = next(w for w in evidence.weights if w.layer == "Gather")
    assert table.quantized and table.stored_dtype == "uint8" and table.shape == [500, 64]
    assert summarize(evidence).quantized_fraction == 1.0


def test_a_pt2e_int8_program_counts_as_quantized_and_loads_in_the_worker(tmp_path: Path, trained: TinyCNN) -> None:
    """torchao's pt2e flow (prepare_pt2e, calibrate, convert_pt2e), saved with torch.export."""
    pytest.importorskip("torchao")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    from grader.worker.runtime import load_model

    example = (torch.randn(4, 1, 8, 8),)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(torch.export.export(copy.deepcopy(trained).eval(), example).module(), quantizer)
    prepared(*example)
    path = tmp_path / "int8.pt2"
    torch.export.save(torch.export.export(convert_pt2e(prepared), example), str(path))
    loaded = load_model(path, "pt2", 1)
    summary = summarize(loaded.evidence)
    assert summary.quantized_fraction == 1.0 and summary.min_quantized_bits == 8
    assert summary.params_total == _params(trained)  # int8 weights + float biases; no scales or zero points
    assert loaded.run({"x": example[0].numpy()})[0].shape == (4, 10)


def test_a_weight_computed_from_the_inputs_is_counted_as_stored_and_flagged() -> None:
    """Conv(x, W * (ReduceMax(x) * 0 + 1)): the weight exists only at run time."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(8, 1, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w_fp32"), numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    inits.append(numpy_helper.from_array(np.array(1.0, np.float32), "one"))
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "one"], ["factor"]),
        helper.make_node("Mul", ["w_fp32", "factor"], ["w"]),
        helper.make_node("Conv", ["x", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
        inits,
    )
    evidence = onnx_evidence(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    (w,) = evidence.weights
    assert w.name == "w_fp32" and not w.quantized and w.prunable and "run time" in w.layer
    assert evidence.flags and "from the inputs at run time" in evidence.flags[0]


def test_weights_inside_a_control_flow_branch_count_and_are_flagged(models: dict[str, Path]) -> None:
    """If(ReduceSum(x) == 0) { a constant } else { the real fp32 model }, next to an int8 decoy."""
    real = onnx.load(str(models["fp32"]))
    x = real.graph.input[0].name
    branch = helper.make_graph(list(real.graph.node), "real", [], list(real.graph.output), list(real.graph.initializer))
    shortcut = helper.make_graph(
        [
            helper.make_node(
                "Constant",
                [],
                [real.graph.output[0].name + "_c"],
                value=numpy_helper.from_array(np.zeros((1, 10), np.float32)),
            )
        ],
        "shortcut",
        [],
        [helper.make_tensor_value_info(real.graph.output[0].name + "_c", TensorProto.FLOAT, None)],
    )
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [
        helper.make_node("ReduceSum", [x], ["total"], keepdims=0),
        helper.make_node("Equal", ["total", "zero"], ["is_zero"]),
        helper.make_node("If", ["is_zero"], ["logits"], then_branch=shortcut, else_branch=branch),
    ]
    graph = helper.make_graph(
        nodes, "g", list(real.graph.input), [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits
    )
    model = helper.make_model(graph, opset_imports=list(real.opset_import))
    model.ir_version = real.ir_version
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.run(None, {x: np.ones((2, 1, 8, 8), np.float32)})[0].shape == (2, 10)
    evidence = onnx_evidence(model)
    summary = summarize(evidence)
    assert {w.name for w in evidence.weights} >= {"conv1.weight", "conv2.weight", "head.weight"}
    assert summary.quantized_fraction == 0.0 and summary.params_total >= 12730
    assert any("If" in flag for flag in evidence.flags)


class _Mlp(nn.Module):
    """A different, smaller network: one linear layer, no convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(x, 1))


def test_a_different_smaller_network_earns_no_removal_credit(tmp_path: Path) -> None:
    from grader.grading.figures import layers_map

    torch.manual_seed(0)
    wide = onnx_evidence(onnx.load(str(export(TinyCNN(width=16), tmp_path / "wide.onnx"))))
    narrow = onnx_evidence(onnx.load(str(export(TinyCNN(width=8), tmp_path / "narrow.onnx"))))
    other = onnx_evidence(onnx.load(str(export(_Mlp(), tmp_path / "mlp.onnx"))))
    assert layers_map(narrow, wide) == ""  # the same layers with fewer channels
    why = layers_map(other, wide)
    assert "1 prunable layers (matmul)" in why and "baseline's 3 (conv, conv, matmul)" in why
    assert summarize(other).prunable_elements < 0.1 * summarize(wide).prunable_elements
    assert effective_sparsity(summarize(other), summarize(wide), maps=not why) == 0.0


def test_an_lstms_biases_are_counted_but_not_flagged() -> None:
    """An honest LSTM's 2-D bias (input 3) reaches no weight slot: counted as a dense weight, never
    flagged for staff (only ops the grader does not know, and control flow, are)."""
    hidden, features = 64, 8  # B holds 8 x 64 = 512 values: weight-sized
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(1, 4 * hidden, features)).astype(np.float32), "W")
    r = numpy_helper.from_array(rng.normal(size=(1, 4 * hidden, hidden)).astype(np.float32), "R")
    b = numpy_helper.from_array(rng.normal(size=(1, 8 * hidden)).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=hidden)],
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, r, b],
    )
    evidence = onnx_evidence(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert {t.name for t in evidence.weights} >= {"W", "R", "B"}
    assert next(t for t in evidence.weights if t.name == "B").zeros == 0
    assert evidence.flags == []
