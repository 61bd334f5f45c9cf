"""Evidence from torch models (``torch.export`` programs, and nn.Modules built from safetensors).

Tensor subclasses are judged by what they store: a torchao int8 weight reports ``float32`` as
its dtype, but flattening it shows the int8 data and zero points underneath. In an exported
program each compute op's weight is what the graph computes for it from stored tensors (a
pt2e int8 weight through ``dequantize_per_channel``, or a float weight through any arithmetic),
so the dead fp32 copies a pt2e export keeps, or a float weight multiplied by a constant next to
an int8 decoy, prove nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch

from grader.contracts.observations import ModelEvidence, TensorEvidence
from grader.worker.evidence.tensors import is_low_bit_integer, tensor_evidence

PRUNABLE_MODULES = {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "Linear", "LSTM", "GRU", "RNN"}
DATA_NAMES = ("qdata", "int_data", "data", "packed_weight", "tensor_impl")


def _inner_tensors(t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Flatten a tensor subclass into the plain tensors it actually stores."""
    if type(t) in (torch.Tensor, torch.nn.Parameter) or not hasattr(t, "__tensor_flatten__"):
        return {"": t}
    names, _ = t.__tensor_flatten__()
    inner: dict[str, torch.Tensor] = {}
    for name in names:
        for sub, tensor in _inner_tensors(getattr(t, name)).items():
            inner[f"{name}.{sub}" if sub else name] = tensor
    return inner


def stored_tensor_evidence(name: str, t: torch.Tensor, layer: str, prunable: bool, dequantized: bool) -> TensorEvidence:
    inner = _inner_tensors(t.detach())
    data_key = max(inner, key=lambda k: (k.split(".")[0] in DATA_NAMES, inner[k].numel()))
    data = inner[data_key]
    zp_key = next((k for k in inner if "zero_point" in k), None)
    zero_point = inner[zp_key].cpu().numpy() if zp_key else 0
    values = data.cpu().numpy() if data.dtype != torch.bfloat16 else data.float().cpu().numpy()
    bits = values.dtype.itemsize * 8
    subclass = len(inner) > 1 or data_key != ""
    quantized = is_low_bit_integer(values.dtype, bits) and (subclass or dequantized)
    axis = 0 if np.asarray(zero_point).size > 1 else None
    return tensor_evidence(
        name,
        values,
        layer,
        prunable=prunable,
        quantized=quantized,
        zero_point=zero_point if quantized else 0,
        axis=axis,
        stored_dtype=str(values.dtype),
    )


def module_evidence(module: torch.nn.Module, fmt: str) -> ModelEvidence:
    """Weights of an nn.Module, classified by the module that owns them."""
    weights: list[TensorEvidence] = []
    params = 0
    kinds = Counter()
    for mod_name, mod in module.named_modules():
        kind = getattr(mod, "original_name", type(mod).__name__)
        kinds[kind] += 1
        for p_name, tensor in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            if not isinstance(tensor, torch.Tensor) or tensor.is_floating_point() is False and tensor.numel() <= 1:
                continue
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            params += tensor.numel()
            if p_name.startswith("weight") and tensor.dim() >= 2:
                weights.append(stored_tensor_evidence(full, tensor, kind, kind in PRUNABLE_MODULES, False))
    return ModelEvidence(format=fmt, params_total=params, weights=weights, op_types=dict(kinds))


COMPUTE_WEIGHT_ARGS: dict[str, tuple[int, ...]] = {
    "conv1d": (1,),
    "conv2d": (1,),
    "conv3d": (1,),
    "convolution": (1,),
    "conv_transpose1d": (1,),
    "conv_transpose2d": (1,),
    "conv_transpose3d": (1,),
    "linear": (1,),
    "addmm": (1, 2),
    "mm": (0, 1),
    "matmul": (0, 1),
    "bmm": (0, 1),
    "embedding": (0,),
}
RANDOM_OPS = {"rand", "randn", "randint", "rand_like", "randn_like", "bernoulli", "normal", "uniform", "dropout"}
CONTROL_FLOW_OPS = {"cond", "while_loop", "map_impl", "scan"}
FLOAT_BUDGET = 1 / 4  # float elements a quantized weight may carry per element (scales, zero points)
RUNTIME_WEIGHT_MIN = 256


def _op_name(target: str) -> str:
    """``aten.conv2d.default`` -> ``conv2d``; ``quantized_decomposed.dequantize_per_channel.default`` -> its middle."""
    parts = target.split(".")
    return parts[1] if len(parts) >= 2 else target


def _storage_of(tensors: list[torch.Tensor]) -> tuple[int, int, int, str]:
    """(elements stored as integers of <= 8 bits, other elements, bits of the largest code
    tensor, dtype of the largest stored tensor), looking inside tensor subclasses."""
    low = other = 0
    codes_bits, codes_size, largest_dtype, largest_size = 0, -1, "float32", -1
    for tensor in tensors:
        for inner in _inner_tensors(tensor.detach()).values():
            n = inner.numel()
            bits = inner.element_size() * 8
            integer = not inner.is_floating_point() and not inner.is_complex() and inner.dtype != torch.bool
            is_low = integer and bits <= 8
            if is_low:
                low += n
                if n > codes_size:
                    codes_bits, codes_size = bits, n
            else:
                other += n
            if n > largest_size:
                largest_dtype, largest_size = str(inner.dtype).removeprefix("torch."), n
    return low, other, codes_bits, largest_dtype


def _decoded(value: Any) -> np.ndarray | None:
    """A consumed weight as numbers: a subclass through its own ``dequantize``."""
    if not isinstance(value, torch.Tensor):
        return None
    tensor = value.detach()
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) and hasattr(tensor, "dequantize"):
        try:
            tensor = tensor.dequantize()
        except Exception:  # noqa: BLE001 - a subclass without a working dequantize: its stored data
            inner = _inner_tensors(tensor)
            tensor = max(inner.values(), key=lambda t: t.numel())
    if tensor.dtype == torch.bfloat16 or tensor.dtype == torch.float16:
        tensor = tensor.float()
    return tensor.cpu().numpy()


class _Program:
    """An exported program's graph with its stored tensors, and which nodes depend on no input."""

    def __init__(self, ep: Any) -> None:
        sig = ep.graph_signature
        self.lifted = {
            **sig.inputs_to_parameters,
            **sig.inputs_to_buffers,
            **getattr(sig, "inputs_to_lifted_tensor_constants", {}),
        }
        self.tensors = {**ep.state_dict, **getattr(ep, "constants", {})}
        self.nodes = list(ep.graph.nodes)
        self.constant: set[Any] = set()
        for node in self.nodes:
            if node.op == "placeholder" and node.name in self.lifted:
                self.constant.add(node)
            elif node.op == "call_function" and self._deterministic(node):
                inputs = node.all_input_nodes
                if all(i in self.constant for i in inputs):
                    self.constant.add(node)  # no inputs at all: a factory op (zeros, full, arange)

    @staticmethod
    def _deterministic(node: Any) -> bool:
        name = _op_name(str(node.target))
        return name not in RANDOM_OPS and name not in CONTROL_FLOW_OPS

    def stored(self, node: Any) -> torch.Tensor | None:
        tensor = self.tensors.get(self.lifted.get(node.name, ""))
        return tensor if isinstance(tensor, torch.Tensor) else None

    def sources(self, node: Any, stop_at_compute: bool = False) -> list[Any]:
        """Placeholders of stored tensors ``node`` is computed from."""
        found, stack, seen = [], [node], set()
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            if current.op == "placeholder":
                if current.name in self.lifted:
                    found.append(current)
                continue
            name = _op_name(str(current.target))
            if stop_at_compute and current is not node and name in COMPUTE_WEIGHT_ARGS and current not in self.constant:
                continue
            stack.extend(current.all_input_nodes)
        return found

    def evaluate(self, wanted: set[Any]) -> dict[Any, Any]:
        """Values of constant nodes, computed in graph order with the graph's own (vetted) ops."""
        needed: set[Any] = set()
        stack = list(wanted)
        while stack:
            node = stack.pop()
            if node in needed:
                continue
            needed.add(node)
            stack.extend(node.all_input_nodes)
        values: dict[Any, Any] = {}
        with torch.no_grad():
            for node in self.nodes:
                if node not in needed:
                    continue
                if node.op == "placeholder":
                    values[node] = self.stored(node)
                    continue
                try:
                    args = torch.fx.node.map_arg(node.args, lambda n: values[n])
                    kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: values[n])
                    values[node] = node.target(*args, **kwargs)
                except Exception:  # noqa: BLE001 - not computable here: its weight is judged by storage
                    values[node] = None
        return values


def exported_program_evidence(ep: Any) -> ModelEvidence:
    """The weight each compute op of an exported program consumes, as ``onnx_graph`` judges ONNX:
    computed from stored tensors alone (through dequantize, view or any arithmetic), evaluated,
    and judged quantized by how its sources are stored; weights computed from the inputs at run
    time are counted as stored and flagged."""
    program = _Program(ep)
    ops = Counter(_op_name(str(n.target)) for n in program.nodes if n.op == "call_function")
    slots, runtime = _weight_args(program)
    values = program.evaluate({arg for _, arg in slots})
    weights: dict[Any, TensorEvidence] = {}
    for op, arg in slots:
        if arg not in weights:
            evidence = _weight_evidence(program, op, arg, values.get(arg))
            if evidence is not None:
                weights[arg] = evidence
    taken = {s for _, arg in slots for s in program.sources(arg)}
    hidden, flags = _runtime_weights(program, runtime, taken)
    flags += [
        f"the program uses torch.{name} (control flow): what runs can depend on the inputs"
        for name in sorted(CONTROL_FLOW_OPS & set(ops))
    ]
    return ModelEvidence(
        format="pt2",
        params_total=_parameter_count(program),
        weights=[*weights.values(), *hidden],
        op_types=dict(ops),
        flags=flags,
    )


def _weight_args(program: _Program) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    constant, runtime = [], []
    for node in program.nodes:
        if node.op != "call_function" or node in program.constant:
            continue
        op = _op_name(str(node.target))
        args = [node.args[i] for i in COMPUTE_WEIGHT_ARGS.get(op, ()) if i < len(node.args)]
        args = [a for a in args if isinstance(a, torch.fx.Node)]
        const = [a for a in args if a in program.constant]
        constant.extend((op, a) for a in const)
        if args and not const and op != "embedding":
            runtime.extend((op, a) for a in args)
    return constant, runtime


def _weight_evidence(program: _Program, op: str, arg: Any, value: Any) -> TensorEvidence | None:
    sources = program.sources(arg)
    stored = [t for t in (program.stored(s) for s in sources) if t is not None]
    if not stored:
        return None
    decoded = _decoded(value)
    largest = max(sources, key=lambda s: program.stored(s).numel() if program.stored(s) is not None else -1)
    if decoded is None:
        decoded = _decoded(program.stored(largest))
    low, other, codes_bits, dtype = _storage_of(stored)
    numel = int(decoded.size)
    quantized = low >= 0.5 * numel and other <= FLOAT_BUDGET * max(numel, 1)
    return tensor_evidence(
        program.lifted[largest.name],
        decoded,
        op,
        prunable=op != "embedding",
        quantized=quantized,
        bits=codes_bits if quantized else _bits(dtype),
        stored_dtype=dtype,
    )


def _bits(dtype: str) -> int:
    return int(torch.empty((), dtype=getattr(torch, dtype)).element_size() * 8) if hasattr(torch, dtype) else 32


def _runtime_weights(
    program: _Program, runtime: list[tuple[str, Any]], taken: set[Any]
) -> tuple[list[TensorEvidence], list[str]]:
    weights, flags = [], []
    for op, arg in runtime:
        for source in program.sources(arg, stop_at_compute=True):
            tensor = program.stored(source)
            if source in taken or tensor is None or tensor.dim() < 2 or tensor.numel() < RUNTIME_WEIGHT_MIN:
                continue
            if tensor.dtype == torch.bool:
                continue
            taken.add(source)
            name = program.lifted[source.name]
            weights.append(stored_tensor_evidence(name, tensor, f"{op} (computed at run time)", True, False))
            flags.append(f"the {op} '{arg.name}' computes its weight from the inputs at run time (from '{name}')")
    return weights, flags


def _parameter_count(program: _Program) -> int:
    """Elements of stored tensors the graph uses as data: not scales or zero points of
    (de)quantize ops, not integer index tables."""
    total = 0
    for node in program.nodes:
        tensor = program.stored(node) if node.op == "placeholder" else None
        if tensor is None or not node.users or tensor.dtype in (torch.int64, torch.bool) or tensor.numel() <= 1:
            continue
        if all(_is_quantization_parameter(user, node) for user in node.users):
            continue
        total += tensor.numel()
    return total


def _is_quantization_parameter(user: Any, node: Any) -> bool:
    name = _op_name(str(user.target))
    if not (name.startswith("quantize") or name.startswith("dequantize")):
        return False
    return node not in user.args[:1]
