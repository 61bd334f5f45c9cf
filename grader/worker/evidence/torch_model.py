"""Evidence from torch models (``torch.export`` programs, and nn.Modules built from safetensors).

Tensor subclasses are judged by what they store: a torchao int8 weight reports ``float32`` as
its dtype, but flattening it shows the int8 data and zero points underneath. In an exported
program only parameters that a graph node uses count, so the dead fp32 copies a pt2e export keeps
prove nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from grader.contracts.observations import ModelEvidence, TensorEvidence
from grader.worker.evidence.tensors import is_low_bit_integer, tensor_evidence

PRUNABLE_MODULES = {"Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "Linear", "LSTM", "GRU", "RNN"}
COMPUTE_OPS = {
    "conv1d",
    "conv2d",
    "conv3d",
    "convolution",
    "conv_transpose2d",
    "linear",
    "addmm",
    "mm",
    "matmul",
    "bmm",
    "embedding",
}
VIEW_OPS = {"view", "reshape", "permute", "t", "transpose", "_to_copy", "to", "contiguous"}
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


def _users_of(node: Any) -> Iterable[Any]:
    return list(node.users)


def exported_program_evidence(ep: Any) -> ModelEvidence:
    """Weights an exported program's graph really uses, with the op that consumes each."""
    sig = ep.graph_signature
    lifted = {
        **sig.inputs_to_parameters,
        **sig.inputs_to_buffers,
        **getattr(sig, "inputs_to_lifted_tensor_constants", {}),
    }
    tensors = {**ep.state_dict, **getattr(ep, "constants", {})}
    weights: list[TensorEvidence] = []
    params = 0
    ops = Counter(
        str(n.target).split(".")[1] if "." in str(n.target) else str(n.target)
        for n in ep.graph.nodes
        if n.op == "call_function"
    )
    for node in ep.graph.nodes:
        if node.op != "placeholder" or node.name not in lifted or not _users_of(node):
            continue
        tensor = tensors.get(lifted[node.name])
        if not isinstance(tensor, torch.Tensor):
            continue
        params += tensor.numel()
        consumer, dequantized = _consumer(node)
        if tensor.dim() >= 2 and consumer is not None:
            prunable = consumer != "embedding"
            weights.append(stored_tensor_evidence(lifted[node.name], tensor, consumer, prunable, dequantized))
    return ModelEvidence(format="pt2", params_total=params, weights=weights, op_types=dict(ops))


def _op_name(target: str) -> str:
    """``aten.conv2d.default`` -> ``conv2d``; ``quantized_decomposed.dequantize_per_channel.default`` -> its middle."""
    parts = target.split(".")
    return parts[1] if len(parts) >= 2 else target


def _consumer(node: Any, depth: int = 0) -> tuple[str | None, bool]:
    """Follow a weight through dequantize / view ops to the compute op that uses it."""
    for user in _users_of(node):
        name = _op_name(str(user.target))
        decodes = name.startswith("dequantize")
        if decodes or name in VIEW_OPS:
            if depth < 6:
                found, dequantized = _consumer(user, depth + 1)
                if found:
                    return found, dequantized or decodes
        elif name in COMPUTE_OPS:
            return name, False
    return None, False
