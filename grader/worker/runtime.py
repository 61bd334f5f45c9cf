"""Load a vetted model inside the worker and give every format the same face: run(feeds) -> outputs.

Runs only in the sandboxed worker. Torch is imported only for torch formats, so grading ONNX
models stays light. On a GPU (``grader.worker.device``) a model also gets a second face for
timing, ``stage(feeds)``: the inputs are copied to the device once, outside the clock, the timed
call runs on device-resident tensors and waits for the device, and the outputs are copied back
afterwards; both copies are timed on their own, so transfers are reported, never hidden in the
latency.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grader.contracts.observations import IOSpec, ModelEvidence
from grader.worker.device import CPU, DeviceFailure, DevicePlan, onnx_gpu_provider, onnx_providers
from grader.worker.evidence.flops import MacCount

Feeds = dict[str, np.ndarray]


@dataclass
class Staged:
    """One batch made ready for timing: ``call`` is what the clock measures (it returns once the
    device is done), ``fetch`` brings the answers to the host afterwards."""

    call: Callable[[], None]
    fetch_outputs: Callable[[], list[np.ndarray]]
    h2d_s: float | None = None  # copying the inputs to the device (None: the host runs it)
    d2h_s: float | None = None

    def fetch(self) -> list[np.ndarray]:
        started = time.perf_counter()
        outputs = self.fetch_outputs()
        if self.h2d_s is not None:
            self.d2h_s = time.perf_counter() - started
        return outputs


def host_stage(run: Callable[[Feeds], list[np.ndarray]], feeds: Feeds) -> Staged:
    """The CPU face: the timed call is the model's own run; its answers are kept for ``fetch``."""
    box: list[list[np.ndarray]] = [[]]

    def call() -> None:
        box[0] = run(feeds)

    return Staged(call, lambda: box[0])


@dataclass
class LoadedModel:
    run: Callable[[Feeds], list[np.ndarray]]
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    evidence: ModelEvidence
    count_macs: Callable[[Feeds], MacCount] | None = None  # MACs of one run on the given feeds
    device: str = "cpu"
    stage_on_device: Callable[[Feeds], Staged] | None = None

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def stage(self, feeds: Feeds) -> Staged:
        """A timed call on ``feeds``: device-resident on a GPU, the plain run on the CPU."""
        if self.stage_on_device is not None:
            return self.stage_on_device(feeds)
        return host_stage(self.run, feeds)

    def fixed_batch(self) -> int | None:
        """The batch size an input is frozen to, if the export did not make it dynamic."""
        for spec in self.inputs:
            if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0:
                return spec.shape[0]
        return None


def load_model(
    path: Path, fmt: str, threads: int, architecture: str | None = None, device: DevicePlan = CPU
) -> LoadedModel:
    """Load a file that ``grader.intake.artifacts`` already vetted as ``fmt``, on ``device``."""
    if fmt == "onnx":
        return _load_onnx(path, threads, device)
    if fmt == "pt2":
        return _load_pt2(path, threads, device)
    if fmt == "safetensors":
        return _load_safetensors(path, threads, architecture or "", device)
    raise ValueError(f"no loader for format '{fmt}'")


FP16_TYPES = (10, 16)  # onnx.TensorProto.FLOAT16, BFLOAT16
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def precision_asked(proto: Any) -> tuple[bool, bool]:
    """(fp16, int8): does the file itself store half-precision weights / Q-DQ nodes? TensorRT's
    fp16 and int8 modes are switched on only then, so the grader never lowers a precision."""
    fp16 = any(t.data_type in FP16_TYPES for t in proto.graph.initializer)
    int8 = any(node.op_type in QDQ_OPS for node in proto.graph.node)
    return fp16, int8


def _load_onnx(path: Path, threads: int, device: DevicePlan = CPU) -> LoadedModel:
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
    session = ort.InferenceSession(str(path), options, providers=onnx_providers(device, *precision_asked(proto)))
    if device.on_gpu and onnx_gpu_provider(device.cuda) not in session.get_providers():
        raise DeviceFailure(
            f"onnxruntime ran this model with {session.get_providers()} instead of {onnx_gpu_provider(device.cuda)}"
        )
    inputs = [IOSpec(name=i.name, shape=list(i.shape), dtype=i.type) for i in session.get_inputs()]
    outputs = [IOSpec(name=o.name, shape=list(o.shape), dtype=o.type) for o in session.get_outputs()]
    return LoadedModel(
        lambda feeds: session.run(None, feeds),
        inputs,
        outputs,
        evidence,
        count_macs=lambda feeds: onnx_macs(proto, per_sample_shapes(feeds)),
        device=device.kind,
        stage_on_device=_onnx_stage(session, [o.name for o in outputs]) if device.on_gpu else None,
    )


def _onnx_stage(session: Any, outputs: list[str]) -> Callable[[Feeds], Staged]:
    """I/O binding: inputs copied to the GPU once, outputs left there until fetched. ``Run`` waits
    for its provider's stream before it returns; ``synchronize_outputs`` makes sure of it."""
    import onnxruntime as ort

    def stage(feeds: Feeds) -> Staged:
        started = time.perf_counter()
        values = {n: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), "cuda", 0) for n, a in feeds.items()}
        h2d = time.perf_counter() - started
        binding = session.io_binding()
        for name, value in values.items():
            binding.bind_ortvalue_input(name, value)
        for name in outputs:
            binding.bind_output(name, "cuda", 0)

        def call(_inputs: dict = values) -> None:  # the bound device inputs live as long as the call
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return Staged(call, binding.copy_outputs_to_cpu, h2d_s=h2d)

    return stage


TORCH_INPUT_TYPES = {"float16": "tensor(float16)", "float32": "tensor(float)", "float64": "tensor(double)"}


def _torch_args(feeds: Feeds, names: list[str], device: str = "cpu") -> list[Any]:
    import torch

    args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in names]
    return [a.to(device) for a in args] if device != "cpu" else args


def _flat(out: Any) -> list[Any]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _torch_runner(module: Any, names: list[str], device: str = "cpu") -> Callable[[Feeds], list[np.ndarray]]:
    import torch

    def run(feeds: Feeds) -> list[np.ndarray]:
        with torch.inference_mode():
            out = module(*_torch_args(feeds, names, device))
        return [t.detach().cpu().numpy() for t in _flat(out)]

    return run


def _torch_stage(module: Any, names: list[str]) -> Callable[[Feeds], Staged]:
    """Device tensors made before the clock starts; the timed call waits for the GPU."""
    import torch

    def stage(feeds: Feeds) -> Staged:
        started = time.perf_counter()
        args = _torch_args(feeds, names, "cuda")
        torch.cuda.synchronize()
        h2d = time.perf_counter() - started
        box: list[Any] = [None]

        def call() -> None:
            with torch.inference_mode():
                box[0] = module(*args)
            torch.cuda.synchronize()

        return Staged(call, lambda: [t.detach().cpu().numpy() for t in _flat(box[0])], h2d_s=h2d)

    return stage


def _torch_model(
    module: Any, names: list[str], evidence: ModelEvidence, device: str = "cpu", dtypes: list[str] | None = None
) -> LoadedModel:
    from grader.worker.evidence.flops import torch_macs

    inputs = _specs(names) if dtypes is None else [IOSpec(name=n, shape=[], dtype=d) for n, d in zip(names, dtypes)]
    return LoadedModel(
        _torch_runner(module, names, device),
        inputs,
        _specs(["output"]),
        evidence,
        count_macs=lambda feeds: torch_macs(module, _torch_args(feeds, names, device)),
        device=device,
        stage_on_device=_torch_stage(module, names) if device == "cuda" else None,
    )


def _program_input_types(program: Any, names: list[str]) -> list[str] | None:
    """The dtype each user input was exported with, as ONNX names it (so fp16 programs get fp16)."""
    values = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    found = [TORCH_INPUT_TYPES.get(str(getattr(values.get(n), "dtype", "")).removeprefix("torch.")) for n in names]
    return None if any(f is None for f in found) else found


def _to_gpu(program: Any) -> Any:
    """An exported program moved to the GPU, constants included (``move_to_device_pass``, torch >= 2.6)."""
    try:
        from torch.export.passes import move_to_device_pass
    except ImportError:
        raise DeviceFailure("this torch cannot move an exported program to the GPU (needs torch >= 2.6)") from None
    return move_to_device_pass(program, "cuda")


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


def _load_pt2(path: Path, threads: int, device: DevicePlan = CPU) -> LoadedModel:
    import torch

    # the quantized_decomposed operators a pt2e-quantized program calls (torchao's convert_pt2e)
    # are defined by this torch module; without it such a program does not deserialize
    import torch.ao.quantization.fx._decomposed  # noqa: F401

    from grader.worker.evidence.torch_model import exported_program_evidence

    _set_torch_threads(threads)
    _vet_sample_inputs(path)
    program = torch.export.load(str(path))
    names = [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind.name == "USER_INPUT"]
    evidence = exported_program_evidence(program)
    dtypes = _program_input_types(program, names)
    module = (_to_gpu(program) if device.on_gpu else program).module()
    return _torch_model(module, names, evidence, device.kind, dtypes)


def _load_safetensors(path: Path, threads: int, architecture: str, device: DevicePlan = CPU) -> LoadedModel:
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
    evidence = module_evidence(module, "safetensors")
    if device.on_gpu:
        module.to("cuda")
    return _torch_model(module, names, evidence, device.kind)
