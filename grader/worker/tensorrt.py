"""TensorRT, built by the grader on the grading machine from the student's ONNX file.

Engines are specific to the GPU and TensorRT version that built them, so a submitted engine
would prove nothing here; the grader parses the ONNX with TensorRT's own parser, builds a
strongly typed engine (the precision is the ONNX file's own, as TensorRT 11 requires; TF32 is
switched off where the flag still exists, so fp32 parity is strict), and runs it through the
same ``run(feeds) -> outputs`` face as every other runtime, with CUDA buffers from torch.

Runs only inside the sandboxed worker, and only when an assignment asks for it. Without the
``tensorrt`` package (``pip install 'compression-grader[tensorrt]'``) or without a CUDA device,
``TensorRTUnavailable`` says why, and the check is skipped with its points pending.

Written against the TensorRT 10 / 11 Python API (named I/O tensors, ``execute_async_v3``);
no GPU was available where this module was written, so it has not been run (see README).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grader.contracts.observations import IOSpec, ModelEvidence
from grader.worker.runtime import Feeds, LoadedModel, Staged


class TensorRTUnavailable(Exception):
    """No TensorRT or no CUDA device here: not the student's fault, and not a failure."""


class TensorRTBuildError(Exception):
    """TensorRT could not parse or build the student's ONNX file; the message says where."""


@dataclass
class Engine:
    model: LoadedModel
    version: str
    build_s: float
    device: str


def _import_tensorrt() -> Any:
    """``tensorrt`` (the meta-package's module, as ``pip install tensorrt-cu13`` gives it) or the
    module of the bindings wheel itself, which is what the grading image installs."""
    try:
        import tensorrt
    except ImportError:
        import tensorrt_bindings as tensorrt
    return tensorrt


def require_tensorrt() -> tuple[Any, Any]:
    """Import tensorrt and torch with CUDA, or say plainly what is missing."""
    try:
        trt = _import_tensorrt()
    except ImportError:
        raise TensorRTUnavailable(
            "TensorRT is not installed on this machine (the course's GPU runner has it; "
            "locally: pip install 'compression-grader[tensorrt]')"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable(
            "no CUDA device on this machine; TensorRT engines are built and timed on the course's GPU runner"
        )
    return trt, torch


def build_engine(onnx_path: Path, sample_feeds: Feeds, max_batch: int, workspace_mb: int) -> Engine:
    """Parse ``onnx_path``, build an engine whose batch axis spans 1..``max_batch``, and wrap it."""
    trt, torch = require_tensorrt()
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(min(parser.num_errors, 5))]
        raise TensorRTBuildError("TensorRT's ONNX parser rejected the model: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    config.add_optimization_profile(_profile(builder, network, sample_feeds, max_batch))
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError("TensorRT could not build an engine from the model (unsupported layer or shape)")
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    build_s = time.perf_counter() - started
    return Engine(_wrap(trt, torch, engine), trt.__version__, build_s, torch.cuda.get_device_name(0))


def _profile(builder: Any, network: Any, feeds: Feeds, max_batch: int) -> Any:
    """Batch from 1 to ``max_batch``; every other dynamic dimension fixed to the inputs' own."""
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        sample = feeds.get(tensor.name)
        if sample is None:
            raise TensorRTBuildError(f"the inputs have no array for ONNX input '{tensor.name}'")
        declared = list(tensor.shape)
        rest = [int(s if d < 0 else d) for d, s in zip(declared[1:], sample.shape[1:])]
        if declared and declared[0] < 0:
            shapes = ([1, *rest], [min(max_batch, 64), *rest], [max_batch, *rest])
        else:
            fixed = [int(declared[0]), *rest] if declared else []
            shapes = (fixed, fixed, fixed)
        profile.set_shape(tensor.name, *shapes)
    return profile


TORCH_DTYPES = {
    np.dtype(np.float32): "float32",
    np.dtype(np.float16): "float16",
    np.dtype(np.int32): "int32",
    np.dtype(np.int64): "int64",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.bool_): "bool",
}


def _wrap(trt: Any, torch: Any, engine: Any) -> LoadedModel:
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    stream = torch.cuda.Stream()

    def bind(feeds: Feeds) -> list[Any]:
        """Inputs copied to the device and every tensor's address set; the outputs' buffers."""
        device_inputs = []
        for name in inputs:
            array = np.ascontiguousarray(feeds[name], dtype=trt.nptype(engine.get_tensor_dtype(name)))
            tensor = torch.from_numpy(array).to("cuda", non_blocking=False)
            device_inputs.append(tensor)
            context.set_input_shape(name, tuple(array.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        results = []
        for name in outputs:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            out = torch.empty(
                tuple(context.get_tensor_shape(name)), dtype=getattr(torch, TORCH_DTYPES[dtype]), device="cuda"
            )
            context.set_tensor_address(name, out.data_ptr())
            results.append(out)
        return [device_inputs, results]

    def execute() -> None:
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()

    def run(feeds: Feeds) -> list[np.ndarray]:
        with torch.cuda.stream(stream):
            _, results = bind(feeds)
            execute()
            return [r.cpu().numpy() for r in results]

    def stage(feeds: Feeds) -> Staged:
        """Device-resident timing: the copies happen here and in ``fetch``, the clock sees ``execute``."""
        started = time.perf_counter()
        with torch.cuda.stream(stream):
            held = bind(feeds)
        torch.cuda.synchronize()
        h2d = time.perf_counter() - started
        # the fetch closure holds the input buffers too, for as long as the timed call reads them
        return Staged(execute, lambda: [r.cpu().numpy() for r in held[1]], h2d_s=h2d)

    def spec(name: str) -> IOSpec:
        shape = [int(d) if d >= 0 else None for d in engine.get_tensor_shape(name)]
        return IOSpec(name=name[:256], shape=shape, dtype=str(engine.get_tensor_dtype(name))[:32])

    evidence = ModelEvidence(format="tensorrt", params_total=0, weights=[])
    return LoadedModel(
        run, [spec(n) for n in inputs], [spec(n) for n in outputs], evidence, device="cuda", stage_on_device=stage
    )
