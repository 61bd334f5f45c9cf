"""Where the worker runs and times the models: the device the job asks for, as this machine allows.

``measure.device`` is ``cpu``, ``cuda`` or ``auto``. A machine without an NVIDIA device node never
touches CUDA at all (no CUDA library is initialised, no provider is asked), so a laptop grades
``cuda`` assignments on the CPU and leaves the figures that need the GPU pending; ``auto`` then
simply measures on the CPU. Where a GPU is there but the stack cannot use it (a CPU-only torch,
onnxruntime without its CUDA provider), the plan says which part is missing, so the report can.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from grader.contracts.job import CudaSpec

DEVICE_ROOT = Path("/dev")
CPU_PROVIDERS = ["CPUExecutionProvider"]


class DeviceFailure(RuntimeError):
    """The machine's GPU stack failed where the plan said it works: the grader's (or the runner's)
    fault, never the student's, so it ends the grading as an error for staff."""


@dataclass(frozen=True)
class DevicePlan:
    """``wanted`` is the job's device, ``kind`` where models really run; ``reason`` says why a
    wanted GPU is not used."""

    wanted: str = "cpu"
    kind: str = "cpu"
    reason: str = ""
    name: str = ""
    cuda: CudaSpec = field(default_factory=CudaSpec)

    @property
    def on_gpu(self) -> bool:
        return self.kind == "cuda"

    @property
    def pending(self) -> bool:
        """The job measures on CUDA and this machine cannot: device figures wait for the GPU runner."""
        return self.wanted == "cuda" and self.kind != "cuda"

    def describe(self) -> str:
        if self.on_gpu:
            return f"cuda:0 ({self.name})" if self.name else "cuda:0"
        if self.wanted == "cpu":
            return "cpu"
        return f"cpu ({self.wanted} asked for: {self.reason})"


CPU = DevicePlan()


def has_nvidia_device(device_root: Path = DEVICE_ROOT) -> bool:
    """The NVIDIA control node: without it there is no GPU to use, and nothing tries CUDA."""
    return (device_root / "nvidiactl").exists()


def plan_device(wanted: str | None, formats: set[str], cuda: CudaSpec, device_root: Path = DEVICE_ROOT) -> DevicePlan:
    """The device the models run on; ``formats`` are the job's model formats (which runtimes must
    reach the GPU)."""
    wanted = wanted or "cpu"
    if wanted == "cpu":
        return CPU
    if not has_nvidia_device(device_root):
        return DevicePlan(wanted, "cpu", "no CUDA device on this machine", cuda=cuda)
    missing = _missing_runtimes(formats, cuda)
    if missing:
        return DevicePlan(wanted, "cpu", missing, cuda=cuda)
    plan = DevicePlan(wanted, "cuda", "", _device_name(), cuda)
    broken = _warm_gpu(plan, formats)
    if broken:
        return DevicePlan(wanted, "cpu", broken, cuda=cuda)
    _strict_fp32()
    return plan


def _warm_gpu(plan: DevicePlan, formats: set[str]) -> str:
    """Start each runtime on the GPU once, before any model is loaded: it proves the provider really
    runs (a listed provider whose CUDA libraries do not load falls back to the CPU without an
    error), and the start-up's memory is charged to no model. Returns what failed ("" if nothing)."""
    if formats - {"onnx"}:
        import torch

        try:
            torch.zeros(1, device="cuda").add_(1)
            torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - a driver / toolkit mismatch is the finding
            return f"torch cannot start CUDA here ({type(exc).__name__}: {str(exc)[:160]})"
    if "onnx" in formats:
        import onnxruntime

        wanted = onnx_gpu_provider(plan.cuda)
        try:
            session = onnxruntime.InferenceSession(identity_model(), providers=onnx_providers(plan))
        except Exception as exc:  # noqa: BLE001
            return f"onnxruntime cannot start {wanted} here ({type(exc).__name__}: {str(exc)[:160]})"
        if wanted not in session.get_providers():
            return f"onnxruntime lists {wanted} but fell back to the CPU (its CUDA libraries did not load)"
    return ""


def _strict_fp32() -> None:
    """torch on the GPU computes fp32 as fp32: cuDNN's TF32 convolutions (on by default) would time,
    and compare, a lower precision than the file stores."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def _missing_runtimes(formats: set[str], cuda: CudaSpec) -> str:
    """What of the stack cannot run these formats on the GPU ("" when all can)."""
    if formats - {"onnx"}:
        try:
            import torch
        except ImportError:
            return "torch is not installed"
        if not torch.cuda.is_available():
            return f"this torch ({torch.__version__}) cannot use the GPU"
    if "onnx" in formats:
        try:
            import onnxruntime
        except ImportError:
            return "onnxruntime is not installed"
        provider = onnx_gpu_provider(cuda)
        if provider not in onnxruntime.get_available_providers():
            return f"this onnxruntime ({onnxruntime.__version__}) has no {provider} (install onnxruntime-gpu)"
    return ""


def onnx_gpu_provider(cuda: CudaSpec) -> str:
    return "TensorrtExecutionProvider" if cuda.onnx_provider == "tensorrt" else "CUDAExecutionProvider"


def onnx_providers(plan: DevicePlan, fp16: bool = False, int8: bool = False) -> list:
    """ONNX Runtime's providers for ``plan``, best first, CPU last (for the nodes a GPU provider does
    not take). The arena grows by what is asked, so its size is the model's peak device memory.
    TensorRT's fp16 / int8 modes only where the file itself stores fp16 weights / Q-DQ nodes: the
    grader never lowers a model's precision for it."""
    if not plan.on_gpu:
        return list(CPU_PROVIDERS)
    # fp32 stays fp32: no TF32 (it would time, and compare, a lower precision than the file has)
    cuda = ("CUDAExecutionProvider", {"device_id": 0, "arena_extend_strategy": "kSameAsRequested", "use_tf32": 0})
    if plan.cuda.onnx_provider != "tensorrt":
        return [cuda, *CPU_PROVIDERS]
    trt = (
        "TensorrtExecutionProvider",
        {"device_id": 0, "trt_fp16_enable": fp16, "trt_int8_enable": int8, "trt_engine_cache_enable": False},
    )
    return [trt, cuda, *CPU_PROVIDERS]


def _device_name() -> str:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    from grader.worker.gpu import nvidia_gpu_names

    return ", ".join(nvidia_gpu_names())[:200]


def identity_model() -> bytes:
    """A one-node ONNX model: enough to start a runtime, too small to cost anything."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "warm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    return model.SerializeToString()


def synchronize() -> None:
    """Wait for every kernel queued on the device (torch's streams; ONNX Runtime's ``Run`` waits for
    its own before it returns)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.synchronize()
