"""Load a vetted model inside the worker and give every format the same face: run(feeds) -> outputs.

Runs only in the sandboxed worker. Torch is imported only for torch formats, so grading ONNX
models stays light.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grader.contracts.observations import IOSpec, ModelEvidence
from grader.worker.evidence.flops import MacCount

Feeds = dict[str, np.ndarray]


@dataclass
class LoadedModel:
    run: Callable[[Feeds], list[np.ndarray]]
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    evidence: ModelEvidence
    count_macs: Callable[[Feeds], MacCount] | None = None  # MACs of one run on the given feeds

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def fixed_batch(self) -> int | None:
        """The batch size an input is frozen to, if the export did not make it dynamic."""
        for spec in self.inputs:
            if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0:
                return spec.shape[0]
        return None


def load_model(path: Path, fmt: str, threads: int, architecture: str | None = None) -> LoadedModel:
    """Load a file that ``grader.intake.artifacts`` already vetted as ``fmt``."""
    if fmt == "onnx":
        return _load_onnx(path, threads)
    if fmt == "pt2":
        return _load_pt2(path, threads)
    if fmt == "safetensors":
        return _load_safetensors(path, threads, architecture or "")
    raise ValueError(f"no loader for format '{fmt}'")


def _load_onnx(path: Path, threads: int) -> LoadedModel:
    import onnx
    import onnxruntime as ort

    from grader.worker.evidence.flops import onnx_macs, per_sample_shapes
    from grader.worker.evidence.onnx_graph import onnx_evidence
    from grader.worker.evidence.onnx_validity import onnx_facts

    proto = onnx.load_model(str(path), load_external_data=True)
    evidence = onnx_evidence(proto)
    evidence.onnx = onnx_facts(proto, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    inputs = [IOSpec(name=i.name, shape=list(i.shape), dtype=i.type) for i in session.get_inputs()]
    outputs = [IOSpec(name=o.name, shape=list(o.shape), dtype=o.type) for o in session.get_outputs()]
    return LoadedModel(
        lambda feeds: session.run(None, feeds),
        inputs,
        outputs,
        evidence,
        count_macs=lambda feeds: onnx_macs(proto, per_sample_shapes(feeds)),
    )


def _torch_args(feeds: Feeds, names: list[str]) -> list[Any]:
    import torch

    return [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names]


def _torch_runner(module: Any, names: list[str]) -> Callable[[Feeds], list[np.ndarray]]:
    import torch

    def run(feeds: Feeds) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(*_torch_args(feeds, names))
        flat = out if isinstance(out, (list, tuple)) else [out]
        return [t.detach().cpu().numpy() for t in flat]

    return run


def _torch_model(module: Any, names: list[str], evidence: ModelEvidence) -> LoadedModel:
    from grader.worker.evidence.flops import torch_macs

    return LoadedModel(
        _torch_runner(module, names),
        _specs(names),
        _specs(["output"]),
        evidence,
        count_macs=lambda feeds: torch_macs(module, _torch_args(feeds, names)),
    )


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _forward_arg_names(module: Any) -> list[str]:
    import inspect

    return [p for p in inspect.signature(module.forward).parameters if p != "self"]


def _specs(names: list[str]) -> list[IOSpec]:
    return [IOSpec(name=n, shape=[], dtype="tensor") for n in names]


def _vet_sample_inputs(path: Path) -> None:
    """``torch.export.load`` retries sample inputs with ``weights_only=False``; make sure it never has to."""
    import torch

    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if "/sample_inputs/" in name:
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception as exc:  # noqa: BLE001 - any refusal means "not plain tensors"
                    raise PermissionError(
                        f"sample inputs '{name}' are not plain tensors ({type(exc).__name__}); "
                        "refused because loading them would unpickle arbitrary objects"
                    ) from None


def _load_pt2(path: Path, threads: int) -> LoadedModel:
    import torch

    # the quantized_decomposed operators a pt2e-quantized program calls (torchao's convert_pt2e)
    # are defined by this torch module; without it such a program does not deserialize
    import torch.ao.quantization.fx._decomposed  # noqa: F401

    from grader.worker.evidence.torch_model import exported_program_evidence

    _set_torch_threads(threads)
    _vet_sample_inputs(path)
    program = torch.export.load(str(path))
    names = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
    module = program.module()
    return _torch_model(module, names, exported_program_evidence(program))


def _load_safetensors(path: Path, threads: int, architecture: str) -> LoadedModel:
    from safetensors.torch import load_file

    from grader.worker import architectures
    from grader.worker.evidence.torch_model import module_evidence

    _set_torch_threads(threads)
    try:
        module = architectures.build(architecture)
    except KeyError:
        raise LookupError(f"unknown architecture '{architecture}'; known: {', '.join(architectures.known())}") from None
    module.load_state_dict(load_file(str(path)), strict=True)
    module.eval()
    names = _forward_arg_names(module)
    return _torch_model(module, names, module_evidence(module, "safetensors"))
