"""The sandboxed worker: loads the student's models, gathers evidence, measures, writes JSON.

Run as ``python -m grader.worker JOB OUT --folder NAME=PATH ...`` by a sandbox only. Every failure a student
can cause ends as an ``Observations.failure`` with a message, never as a traceback; the host
treats the output file as untrusted and validates it.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from grader.contracts.job import NO_JOB_EXIT, DerivedSpec, FileRef, Job, ModelJob, Pair, ProbeSpec
from grader.contracts.observations import (
    BatchProbe,
    DerivedStatus,
    Environment,
    FidelityComparison,
    GpuFacts,
    HeldoutPredictions,
    ModelObservation,
    Observations,
)
from grader.contracts.problem import Problem, model_field
from grader.errors import SubmissionError
from grader.worker.device import CPU, DeviceFailure, DevicePlan, identity_model, plan_device, synchronize
from grader.worker.evidence.flops import MacCount
from grader.worker.measure import (
    kl_divergence,
    max_abs_error,
    output_parity,
    peak_rss_mb,
    reset_peak_rss,
    rss_mb,
    snr_db,
    top1_agreement,
)
from grader.worker.memory import NOT_FORKED, Forked, measure_in_forks
from grader.worker.runtime import Feeds, LoadedModel, load_model
from grader.worker.searchlog import observe_search_log
from grader.worker.timing import pending_pair, pending_solo, plan_alone, plan_pair, rows_of, time_planned

OVERLAP_PEAK_MB = 128.0  # a model's fork that peaked at most this lets the next model's start beside it
JOB_WAIT_S = 600.0  # a worker started early gives up on a host that never sends its job
JOB_POLL_S = 0.005

ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


def fault(problem: Problem) -> SubmissionError:
    """The exception for anything the student's files caused; it ends as ``Observations.failure``
    (bounded here: a message built from the student's names must never make the report invalid)."""
    bounded = problem.model_copy(update={"message": problem.message[:1500], "hint": problem.hint[:1000]})
    return SubmissionError.of([bounded])


def _names(names: list[str]) -> str:
    shown = [n if len(n) <= 60 else n[:57] + "..." for n in names[:8]]
    return "[" + ", ".join(repr(n) for n in shown) + (", ..." if len(names) > 8 else "") + "]"


def load_inputs(path: Path | None, max_samples: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if path is None:
        raise fault(Problem(kind="input", message="no inputs were given", hint="Add data.inputs to submission.yaml."))
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k][:max_samples] for k in archive.files}
    except ValueError as exc:
        raise fault(
            Problem(
                kind="input",
                message=f"inputs file cannot be read without pickle: {exc}",
                hint="Save plain numeric arrays with np.savez.",
            )
        ) from None
    labels = arrays.pop("labels", None)
    if not arrays:
        raise fault(
            Problem(
                kind="input",
                message="inputs file holds no input arrays",
                hint="Store each model input under its input name, e.g. np.savez(f, input=x).",
            )
        )
    sizes = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise fault(
            Problem(
                kind="input",
                message="input arrays must share a non-empty first (batch) axis",
                hint="Stack samples along axis 0.",
            )
        )
    return arrays, labels


def feeds_for(model: LoadedModel, role: str, arrays: dict[str, np.ndarray], index: np.ndarray) -> Feeds:
    """Select rows ``index`` of each input the model declares, matching names (or the only array)."""
    names = model.input_names
    if all(n in arrays for n in names):
        chosen = {n: arrays[n] for n in names}
    elif len(names) == 1 and len(arrays) == 1:
        chosen = {names[0]: next(iter(arrays.values()))}
    else:
        raise fault(
            Problem(
                kind="input",
                field=model_field(role),
                message=f"model '{role}' expects inputs {_names(names)} but inputs.npz has {_names(sorted(arrays))}",
                hint="Save one array per model input, keyed by the input's name.",
            )
        )
    feeds = {}
    for spec in model.inputs:
        value = chosen[spec.name][index]
        want = ORT_DTYPES.get(spec.dtype)
        feeds[spec.name] = value.astype(want) if want is not None and value.dtype != want else value
    return feeds


def run_all(
    model: LoadedModel,
    role: str,
    arrays: dict[str, np.ndarray],
    batch: int,
    first_batch_done: Callable[[list[np.ndarray]], None] = lambda _: None,
) -> list[np.ndarray]:
    """Outputs for every sample, in chunks (padding the last one when the batch size is frozen);
    ``first_batch_done`` is called with the first chunk's outputs once it has run (where a model's
    peak is read)."""
    total = next(iter(arrays.values())).shape[0]
    fixed = model.fixed_batch()
    step = fixed or batch
    chunks: list[list[np.ndarray]] = []
    for start in range(0, total, step):
        index = np.arange(start, start + step) % total if fixed else np.arange(start, min(start + step, total))
        outputs = _call(model, role, feeds_for(model, role, arrays, index))
        keep = min(step, total - start)
        if chunks and len(outputs) != len(chunks[0]):
            raise fault(
                Problem(
                    kind="run",
                    field=model_field(role),
                    message=f"model '{role}' gave {len(chunks[0])} output(s) for one batch and "
                    f"{len(outputs)} for the next",
                    hint="A model must give the same outputs for every batch; remove any branching on "
                    "the inputs' values or on how often it was called.",
                )
            )
        if any(o.ndim == 0 for o in outputs):
            raise fault(
                Problem(
                    kind="run",
                    field=model_field(role),
                    message=f"model '{role}' gave a scalar output for a batch of {len(index)}: "
                    "there is no answer per sample to compare",
                    hint="Keep the batch as the first axis of every output (no reduction over the batch).",
                )
            )
        chunks.append([o[:keep] for o in outputs])
        if len(chunks) == 1:
            first_batch_done(chunks[0])
    try:
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]
    except ValueError:
        shapes = sorted({str(list(o.shape[1:])) for c in chunks for o in c})[:6]
        raise fault(
            Problem(
                kind="run",
                field=model_field(role),
                message=f"model '{role}' gives outputs whose shape changes with the batch ({', '.join(shapes)})",
                hint="Every sample's output must have the same shape, whatever the batch.",
            )
        ) from None


SEND_LIMIT_MB = 256  # the fork's answers are sent back only under this size (``Session._in_fork``)

ALLOCATION_FAILURES = ("bad_alloc", "failed to allocate", "out of memory", "cannot allocate memory")


def _is_allocation_failure(exc: BaseException) -> bool:
    """Runtimes report a refused allocation as their own error type; the rlimit is why."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(marker in text for marker in ALLOCATION_FAILURES)


def _call(model: LoadedModel, role: str, feeds: Feeds) -> list[np.ndarray]:
    try:
        return [np.asarray(o) for o in model.run(feeds)]
    except Exception as exc:  # noqa: BLE001 - the student's model failed, say how
        if _is_allocation_failure(exc):
            raise MemoryError(str(exc)) from None
        raise fault(
            Problem(
                kind="run",
                field=model_field(role),
                message=f"model '{role}' failed to run: {_short(exc)}",
                hint=gpu_only_hint(exc, model.device)
                or "Run it yourself with the same inputs.npz (e.g. in onnxruntime) and fix the error.",
            )
        ) from None


MISSING_KERNEL = ("could not find an implementation", "not_implemented")  # onnxruntime: no CPU kernel


def gpu_only_hint(exc: BaseException, device: str, half_types: bool = False) -> str:
    """On a CPU grading, a failure that says the model needs a GPU gets a message saying so: torch
    naming CUDA, or onnxruntime missing a CPU kernel for a model that stores 16-bit floats (an int8
    ConvInteger without a CPU kernel is not a GPU matter, and keeps the usual hint)."""
    text = str(exc).lower()
    needs_gpu = "cuda" in text or (half_types and any(marker in text for marker in MISSING_KERNEL))
    if device != "cpu" or not needs_gpu:
        return ""
    return (
        "The model seems to need a GPU (an operator or data type that only has a CUDA implementation, or "
        "tensors saved on a CUDA device), and this grading runs on the CPU. Export it on the CPU with "
        "operators the CPU has (float32 where the CPU has no float16 kernel; torch.export from a model "
        "on 'cpu'), or, if the assignment measures on the GPU (measure.device: cuda), let the course's "
        "GPU runner grade it."
    )


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:600] if text else ''}"


def observe_model(
    job: ModelJob,
    path: Path,
    threads: int,
    arrays: dict[str, np.ndarray],
    batch: int,
    forked: Forked = NOT_FORKED,
    device: DevicePlan = CPU,
) -> tuple[ModelObservation, LoadedModel, list[np.ndarray]]:
    """Load, run every input, gather evidence. ``forked`` is what a fresh copy of the worker
    measured for this model (``grader.worker.memory``): its peak memory and its outputs on every
    input; whatever it lacks is measured here."""
    reset_peak_rss()
    before = rss_mb()
    gpu = GpuMemory(job.format) if device.on_gpu else None
    started = time.perf_counter()
    try:
        model = load_model(path, job.format, threads, job.architecture, device)
    except DeviceFailure:
        raise
    except Exception as exc:  # noqa: BLE001
        if _is_allocation_failure(exc):
            raise MemoryError(str(exc)) from None
        raise fault(
            Problem(
                kind="load",
                field=model_field(job.role),
                message=f"model '{job.role}' ('{job.display_name}') failed to load: {_short(exc)}",
                hint=gpu_only_hint(exc, device.kind, stores_half(path, job.format))
                or "Check that the file loads on your machine with the format's own loader.",
            )
        ) from None
    load_s = time.perf_counter() - started
    if forked.problem is not None:  # a later batch failed in the fork: the same failure here
        raise fault(forked.problem)
    outputs = forked.outputs
    if outputs is None or not answers_agree(outputs, run_all(model, job.role, _first_rows(arrays), batch)):
        outputs = run_all(model, job.role, arrays, batch)
    peak = forked.peak_mb if forked.peak_mb is not None else max(peak_rss_mb() - before, 0.0)
    gpu_peak, gpu_note = gpu.peak() if gpu is not None else (None, "")
    macs = count_macs(model, job.role, arrays)
    observation = ModelObservation(
        role=job.role,
        path=job.display_name,
        format=job.format,
        evidence=model.evidence,
        inputs=model.inputs,
        outputs=model.outputs,
        load_s=load_s,
        peak_rss_mb=peak,
        top1=top1(outputs),
        macs_per_sample=macs.macs,
        macs_note=macs.note[:1000],
        device=model.device,
        gpu_peak_mb=gpu_peak,
        gpu_memory_note=gpu_note,
        trusted=job.trusted,
    )
    return observation, model, outputs


CHECKED_ROWS = 32  # rows of the fork's answers the worker recomputes with the model it times


def _first_rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: array[:CHECKED_ROWS] for name, array in arrays.items()}


def answers_agree(forked: list[np.ndarray], here: list[np.ndarray]) -> bool:
    """Do the fork's answers start with the ones the worker's own session gives on the first rows?
    The worker times its own session, so the untimed answers it holds the timed ones against must
    be that session's: where they are not (beyond a batch size's rounding), it runs every input
    itself, as it did before the fork sent answers."""
    if len(forked) != len(here):
        return False
    for sent, computed in zip(forked, here):
        sent = sent[: computed.shape[0]]
        if sent.shape != computed.shape or sent.dtype != computed.dtype:
            return False
        if np.issubdtype(sent.dtype, np.floating):
            scale = float(np.max(np.abs(sent), initial=0.0))
            if not np.allclose(computed, sent, rtol=1e-3, atol=1e-4 * scale + 1e-7, equal_nan=True):
                return False
        elif not np.array_equal(sent, computed):
            return False
    return True


def stores_half(path: Path, fmt: str) -> bool:
    """Does an ONNX file declare 16-bit float tensors (weights, inputs or outputs)? Read without its
    external data: only the types matter."""
    if fmt != "onnx":
        return False
    try:
        import onnx

        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable: no GPU hint, the loader's own message stands
        return False
    half = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    declared = [v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]]
    return any(t.data_type in half for t in proto.graph.initializer) or any(t in half for t in declared)


class GpuMemory:
    """Peak device memory of one model, loaded and run: torch's allocator peak for torch formats
    (exact, whatever else is loaded), the growth of the device's memory in use for ONNX Runtime
    (its CUDA arena grows by what is asked and never shrinks, so that growth is the model's peak;
    one grading holds the GPU alone)."""

    def __init__(self, fmt: str) -> None:
        self.torch = fmt != "onnx"  # an ONNX-only grading on a GPU need not have torch at all
        synchronize()
        if self.torch:
            import torch

            self.before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            from grader.worker.gpu import device_memory_used_mb

            self.before = device_memory_used_mb()

    def peak(self) -> tuple[float | None, str]:
        synchronize()
        if self.torch:
            import torch

            return (torch.cuda.max_memory_allocated() - self.before) / 2**20, "torch.cuda.max_memory_allocated"
        from grader.worker.gpu import device_memory_used_mb

        after = device_memory_used_mb()
        if after is None or self.before is None:
            return None, "not measured: neither torch nor NVML can read the device's memory here"
        return max(after - self.before, 0.0), "device memory in use, before and after (ONNX Runtime's CUDA arena)"


def class_scores(output: np.ndarray) -> np.ndarray | None:
    """The output as [N, classes] scores, if it is a classifier's: two dimensions once the size-1
    axes after the batch are dropped ([N, 10, 1] is [N, 10]), with at least two classes. A
    regressor's [N, 1] or [N] is not (its argmax is always 0, so any two would "agree")."""
    if output.ndim < 2 or output.size == 0:
        return None
    kept = [output.shape[0], *(d for d in output.shape[1:] if d != 1)]
    if len(kept) != 2 or kept[1] < 2:
        return None
    return output.reshape(kept)


def is_class_scores(output: np.ndarray) -> bool:
    return class_scores(output) is not None


def first_class_scores(outputs: list[np.ndarray]) -> np.ndarray | None:
    """The first output that is class scores: the model's answer, wherever it puts it."""
    return next((s for s in (class_scores(o) for o in outputs) if s is not None), None)


def top1(outputs: list[np.ndarray]) -> list[int] | None:
    """Each sample's predicted class, from the first output that is [N, classes] scores."""
    scores = first_class_scores(outputs)
    return None if scores is None else [int(c) for c in scores.argmax(-1)]


def compare_outputs(
    pair: Pair, ref_out: list[np.ndarray], cand_out: list[np.ndarray], names: list[str]
) -> FidelityComparison:
    """Every output is judged and the worst decides: top-1 agreement and KL over every output
    that is class scores, SNR over every output; per-output parity too. Judging only one output
    would let a model put a faithful decoy there and anything at all in the others."""
    parity = [
        output_parity(names[i] if i < len(names) else f"output{i}", r, c, pair.atol, pair.rtol)
        for i, (r, c) in enumerate(zip(ref_out, cand_out))
    ]
    a = ref_out[0] if ref_out else np.zeros(0)
    note = ""
    if len(ref_out) != len(cand_out):
        note = f"'{pair.candidate}' has {len(cand_out)} output(s), '{pair.reference}' has {len(ref_out)}"
    else:
        for i, (r, c) in enumerate(zip(ref_out, cand_out)):
            if r.shape != c.shape:
                note = (
                    f"'{pair.candidate}' gave output {i} as {list(c.shape)} where '{pair.reference}' gave "
                    f"{list(r.shape)} for the same {len(r) if r.ndim else 1} samples (the first axis must be the batch)"
                )
                break
    pairs = list(zip(ref_out, cand_out)) if not note else []
    scored = [(class_scores(r), class_scores(c)) for r, c in pairs]
    classes = [(r, c) for r, c in scored if r is not None and c is not None]
    snrs = [snr_db(r, c) for r, c in pairs]
    agreements = [top1_agreement(r, c) for r, c in classes]
    kls = [kl_divergence(r, c) for r, c in classes]
    errors = [max_abs_error(r, c) for r, c in pairs]
    return FidelityComparison(
        reference=pair.reference,
        candidate=pair.candidate,
        samples=int(a.shape[0]) if a.ndim else 1,
        top1_agreement=_worst(agreements, min),
        snr_db=None if any(v is None for v in snrs) else _worst(snrs, min),
        max_abs_error=_worst(errors, max),
        kl_divergence=_worst(kls, max),
        output_kind="classes" if classes else "values",
        atol=pair.atol,
        rtol=pair.rtol,
        outputs=parity,
        note=note,
    )


def _worst(values: list[float | None], pick) -> float | None:  # noqa: ANN001
    known = [v for v in values if v is not None]
    return pick(known) if known and len(known) == len(values) else None


def batch_probe(model: LoadedModel, role: str, arrays: dict[str, np.ndarray], spec: ProbeSpec) -> BatchProbe:
    """The first N samples one at a time, then as one batch, then that batch again.

    A model whose batch axis is frozen in the file fails the batch run; that is recorded (it is
    what the probe is for), never raised.
    """
    total = next(iter(arrays.values())).shape[0]
    index = np.arange(spec.batch_size) % total
    names = [o.name for o in model.outputs]
    probe = BatchProbe(
        role=role, batch_size=int(index.size), fixed_batch=model.fixed_batch(), single_ok=False, batch_ok=False
    )
    errors: list[str] = []
    singles: list[list[np.ndarray]] = []
    batch: list[np.ndarray] = []
    try:
        singles = [_call(model, role, feeds_for(model, role, arrays, index[i : i + 1])) for i in range(index.size)]
        probe.single_ok = True
        probe.single_shapes = [list(map(int, o.shape)) for o in singles[0]][:64]
        probe.single_shapes_stable = all([o.shape for o in s] == [o.shape for o in singles[0]] for s in singles)
    except SubmissionError as error:
        errors.append(f"batch 1: {error.problem.message}")
    try:
        batch = _call(model, role, feeds_for(model, role, arrays, index))
        again = _call(model, role, feeds_for(model, role, arrays, index))
        probe.batch_ok = True
        probe.batch_shapes = [list(map(int, o.shape)) for o in batch][:64]
        probe.repeat_max_abs_error = max((max_abs_error(a, b) or 0.0 for a, b in zip(batch, again)), default=0.0)
    except SubmissionError as error:
        errors.append(f"batch {index.size}: {error.problem.message}")
    if probe.single_ok and probe.batch_ok:
        stacked = [np.concatenate([s[i] for s in singles]) for i in range(len(singles[0]))]
        probe.shapes_consistent = (
            probe.single_shapes_stable
            and len(stacked) == len(batch)
            and all(s.shape == b.shape and b.shape[:1] == (index.size,) for s, b in zip(stacked, batch))
        )
        probe.outputs = [
            output_parity(names[i] if i < len(names) else f"output{i}", b, s, spec.atol, spec.rtol)
            for i, (s, b) in enumerate(zip(stacked, batch))
        ][:64]
    elif probe.single_ok:
        again = _call(model, role, feeds_for(model, role, arrays, index[:1]))
        probe.repeat_max_abs_error = max((max_abs_error(a, b) or 0.0 for a, b in zip(singles[0], again)), default=0.0)
    probe.error = "; ".join(errors)[:2000]
    return probe


def count_macs(model: LoadedModel, role: str, arrays: dict[str, np.ndarray]) -> MacCount:
    """MACs of one sample: counted on a batch-1 feed (or the frozen batch, divided by it)."""
    if model.count_macs is None:
        return MacCount(None, "not computable for this runtime")
    total = next(iter(arrays.values())).shape[0]
    batch = model.fixed_batch() or 1
    count = model.count_macs(feeds_for(model, role, arrays, np.arange(batch) % total))
    if count.macs is None or batch == 1:
        return count
    return MacCount(count.macs // batch, f"{count.note}; the file fixes the batch to {batch}, divided by it")


def environment(job: Job, device: DevicePlan = CPU, gpu: GpuFacts | None = None) -> Environment:
    """The worker's own facts; the host adds where it ran (the sandbox) and which data it used."""
    libraries = {"numpy": np.__version__}
    for name, module_name in STACK_MODULES:
        module = sys.modules.get(module_name)
        if module is not None:
            libraries[name] = getattr(module, "__version__", "?")
    libraries.update(cuda_stack())
    return Environment(
        cpu=_cpu_name(),
        cores=os.cpu_count(),
        threads=job.measure.timing.threads,
        gpu=gpu_name(),
        device=device.describe()[:300],
        device_pending=device.pending,
        device_reason=device.reason[:300],
        gpu_facts=gpu,
        python=platform.python_version(),
        platform=platform.platform(),
        libraries=libraries,
    )


STACK_MODULES = (
    ("onnxruntime", "onnxruntime"),
    ("onnx", "onnx"),
    ("torch", "torch"),
    ("tensorrt", "tensorrt"),
    ("tensorrt", "tensorrt_bindings"),  # the bindings wheel's own module, as the GPU image installs it
)


def cuda_stack() -> dict[str, str]:
    """The CUDA side of the stack as the libraries loaded here were built for it: a mismatch with the
    driver or between them (torch's CUDA against onnxruntime's) shows in the first result."""
    found: dict[str, str] = {}
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch.version, "cuda", None):
        found["torch cuda"] = str(torch.version.cuda)
        if torch.cuda.is_available():
            found["cudnn"] = str(torch.backends.cudnn.version())
            found["gpu compute capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    driver = nvidia_driver()
    if driver:
        found["nvidia driver"] = driver
    ort = sys.modules.get("onnxruntime")
    if ort is not None:
        providers = [p.removesuffix("ExecutionProvider") for p in ort.get_available_providers()]
        found["onnxruntime providers"] = ",".join(providers)[:64]
    return found


def nvidia_driver(version_file: Path = Path("/proc/driver/nvidia/version")) -> str:
    """The kernel driver's version ("580.65.06"), which bounds the CUDA a machine can run; "" without one."""
    try:
        first = version_file.read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return ""
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9]+(?:\.[0-9]+)+)", first)
    return match.group(1) if match else ""


def gpu_name(driver_proc: Path = Path("/proc/driver/nvidia/gpus")) -> str:
    """The GPU(s) this process can see, or "none".

    Torch, where already loaded, asks CUDA; otherwise the NVIDIA driver's own listing, which the
    container toolkit exposes only for the GPUs passed into a container, so grading ONNX models
    does not need torch just to say which GPU was there.
    """
    from grader.worker.gpu import nvidia_gpu_names

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return ", ".join(nvidia_gpu_names(driver_proc))[:200] or "none"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _preload(job: Job) -> None:
    """Import the runtimes before any memory is measured, so no model is charged for them."""
    formats = {m.format for m in job.models}
    if "onnx" in formats:
        _warm_onnxruntime()
    if formats - {"onnx"}:
        import torch  # noqa: F401


@functools.cache
def _warm_onnxruntime() -> None:
    """Create one trivial session so runtime set-up is not charged to the first model's memory
    (once: a worker started early has done it while it waited for its job)."""
    import onnxruntime as ort

    session = ort.InferenceSession(identity_model(), providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.zeros(1, np.float32)})


class Session:
    """One grading inside the worker: what is loaded so far, and what has been observed."""

    def __init__(self, job: Job, folders: dict[str, Path], obs: Observations) -> None:
        self.job = job
        self.folders = folders
        self.obs = obs
        self.spec = job.measure
        self.threads = job.measure.timing.threads
        self.loaded: dict[str, LoadedModel] = {}
        self.outputs: dict[str, list[np.ndarray]] = {}
        self.heldout_outputs: dict[str, list[np.ndarray]] = {}
        self.arrays, _ = load_inputs(self.path(job.inputs), job.measure.max_samples)
        self.heldout_arrays: dict[str, np.ndarray] | None = None
        self.device = plan_device(job.measure.device, {m.format for m in job.models}, job.measure.cuda)
        self.gpu: GpuFacts | None = None  # the GPU's facts, on a GPU (``observe`` fills them in)

    def path(self, ref: FileRef | None) -> Path | None:
        return None if ref is None else ref.resolve(self.folders)

    def available(self, *roles: str) -> bool:
        return all(r in self.loaded for r in roles)

    def load_models(self) -> None:
        # each model's peak (and its outputs) in a fresh fork, before anything is loaded here; not on
        # a GPU, where a fork cannot use the CUDA context, so all is measured in-process
        forks = {m.role: NOT_FORKED for m in self.job.models} if self.device.on_gpu else self._in_forks()
        for model_job in self.job.models:
            try:
                observation, model, outputs = observe_model(
                    model_job,
                    self.path(model_job.file),
                    self.threads,
                    self.arrays,
                    self.spec.fidelity_batch_size,
                    forks[model_job.role],
                    self.device,
                )
            except SubmissionError as error:
                if not model_job.trusted:
                    raise
                self.obs.unavailable[model_job.role] = error.problem.message  # the inputs do not fit it
                continue
            self.obs.models[model_job.role] = observation
            self.loaded[model_job.role], self.outputs[model_job.role] = model, outputs

    def _in_forks(self) -> dict[str, Forked]:
        """Every model's fork, from the worker as it is before any model is loaded. Where it has a
        second core, a model whose peak (after its first batch) is small lets the next one's fork
        start while it runs the rest of the inputs (``OVERLAP_PEAK_MB``: the most this adds to
        what the sandbox's memory limit sees at once)."""
        overlap = OVERLAP_PEAK_MB if len(os.sched_getaffinity(0)) >= 2 else 0.0
        forked = measure_in_forks([self._fork_work(m) for m in self.job.models], overlap_mb=overlap)
        return dict(zip([m.role for m in self.job.models], forked))

    def _fork_work(self, model_job: ModelJob) -> tuple[Callable, Callable[[list[np.ndarray]], bool]]:
        path = self.path(model_job.file)

        total = next(iter(self.arrays.values())).shape[0]

        def load_and_run(first_batch_done: Callable[[list[np.ndarray]], None]) -> list[np.ndarray]:
            model = load_model(path, model_job.format, self.threads, model_job.architecture, self.device)
            return run_all(model, model_job.role, self.arrays, self.spec.fidelity_batch_size, first_batch_done)

        def worth_sending(first: list[np.ndarray]) -> bool:
            """Answers of all inputs under ``SEND_LIMIT_MB`` (estimated from the first batch): larger ones
            would sit in the fork, the pipe and the worker at once, so the worker computes them itself."""
            rows = max(1, first[0].shape[0]) if first and first[0].ndim else 1
            return sum(o.nbytes for o in first) / rows * total <= SEND_LIMIT_MB * 2**20

        return load_and_run, worth_sending

    def build_derived(self) -> None:
        """Models the grader builds itself (a TensorRT engine from the ONNX file), on this machine."""
        for spec in self.spec.derived:
            source = next(m for m in self.job.models if m.role == spec.source)
            status = build_derived(spec, self.path(source.file), self.loaded[spec.source], self.arrays, self.threads)
            if isinstance(status, tuple):
                status, model = status
                try:
                    self.outputs[spec.role] = run_all(model, spec.role, self.arrays, self.spec.fidelity_batch_size)
                    self.loaded[spec.role] = model
                except SubmissionError as error:
                    status = status.model_copy(update={"status": "failed", "reason": error.problem.message[:2000]})
            self.obs.derived.append(status)

    def probe(self) -> None:
        if self.spec.probe is None:
            return
        for role in self.spec.probe.roles:
            if self.available(role):
                self.obs.probes.append(batch_probe(self.loaded[role], role, self.arrays, self.spec.probe))

    def compare(self) -> None:
        for pair in self.spec.compare:
            if self.available(pair.reference, pair.candidate):
                names = [o.name for o in self.loaded[pair.candidate].outputs]
                self.obs.fidelity.append(
                    compare_outputs(pair, self.outputs[pair.reference], self.outputs[pair.candidate], names)
                )

    def time(self) -> None:
        """The timing budget is shared by every timed pair and solo role, at every batch size.

        Batches come from the team's inputs, or the course's held-out inputs where the assignment
        says so; what the models answer while timed is held against their untimed answers there.
        """
        pairs = [p for p in self.spec.compare if p.timed and self.available(p.reference, p.candidate)]
        solo = [r for r in self.spec.solo if self.available(r)]
        batches = self.spec.timing.batch_sizes
        self.sample_gpu()
        if self.device.pending:
            self._pending_timing(pairs, solo, batches)
            return
        arrays, untimed = self._timing_inputs({r for p in pairs for r in (p.reference, p.candidate)} | set(solo))
        # one equal share of the budget per timed figure: each share is that figure's cap, so a
        # figure that cannot settle never takes more than before, and one that settles ends sooner;
        # the figures take turns, so each one's rounds are spread over the whole timing
        cap = self.spec.timing.budget_s / max(1, len(batches) * (len(pairs) + len(solo)))
        planned_pairs = [
            plan_pair(p.reference, p.candidate, self.loaded, arrays, untimed, batch, self.job, cap, feeds_for)
            for p in pairs
            for batch in batches
        ]
        planned_solo = [
            plan_alone(role, self.loaded[role], arrays, untimed.get(role), batch, self.job, cap, feeds_for)
            for role in solo
            for batch in batches
        ]
        figures = time_planned(planned_pairs + planned_solo)
        self.obs.timing += figures[: len(planned_pairs)]
        self.obs.solo_timing += figures[len(planned_pairs) :]

    def sample_gpu(self) -> None:
        """The GPU's clocks just before timing (the models loaded and run, so the GPU is busy, not
        idle): held against the end of the run, a clock that moves while models are timed shows."""
        if self.gpu is not None:
            from grader.worker.gpu import gpu_state

            self.gpu.start = gpu_state() or self.gpu.start

    def _pending_timing(self, pairs: list[Pair], solo: list[str], batches: list[int]) -> None:
        """No GPU here for an assignment that times on one: nothing is timed (CPU times would stand
        for GPU ones), every timed figure says it waits for the course's GPU runner."""
        reason = f"timed on CUDA; {self.device.reason}"
        threads = self.spec.timing.threads
        for pair in pairs:
            self.obs.timing += [pending_pair(pair.reference, pair.candidate, b, threads, reason) for b in batches]
        for role in solo:
            self.obs.solo_timing += [pending_solo(role, b, threads, reason) for b in batches]

    def _timing_inputs(self, roles: set[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray | None]]:
        if self.spec.timing.inputs == "heldout" and self.load_heldout() is not None:
            arrays = self.heldout_arrays
            for role in roles - set(self.heldout_outputs):
                self.heldout_outputs[role] = run_all(self.loaded[role], role, arrays, self.spec.fidelity_batch_size)
            outputs = self.heldout_outputs
        else:
            arrays, outputs = self.arrays, self.outputs
        return arrays, {role: (rows_of(outputs[role]) if outputs.get(role) else None) for role in roles}

    def load_heldout(self) -> dict[str, np.ndarray] | None:
        if self.heldout_arrays is None and self.job.heldout_inputs is not None:
            self.heldout_arrays, _ = load_inputs(self.path(self.job.heldout_inputs), self.spec.max_samples)
        return self.heldout_arrays

    def heldout(self) -> None:
        """Answers on the course's evaluation inputs (their labels stay with the host, which scores
        them); a model that cannot take them is noted, not failed."""
        spec = self.spec.heldout
        if spec is None or self.load_heldout() is None:
            return
        for role in spec.roles:
            if not self.available(role):
                continue
            try:
                outputs = run_all(self.loaded[role], role, self.heldout_arrays, self.spec.fidelity_batch_size)
            except SubmissionError as error:
                self.obs.heldout.append(HeldoutPredictions(role=role, error=error.problem.message[:2000]))
                continue
            self.heldout_outputs[role] = outputs
            answers = top1(outputs)
            error = "" if answers is not None else "its outputs are not [N, classes] scores for the course's labels"
            self.obs.heldout.append(
                HeldoutPredictions(role=role, samples=int(outputs[0].shape[0]), top1=answers, error=error)
            )

    def search_log(self) -> None:
        if self.job.search_log is not None:
            log = self.job.search_log
            self.obs.search_log = observe_search_log(self.path(log.file), log.format, log.study)


Derived = DerivedStatus | tuple[DerivedStatus, LoadedModel]


def build_derived(
    spec: DerivedSpec, onnx_path: Path, source: LoadedModel, arrays: dict[str, np.ndarray], threads: int = 1
) -> Derived:
    """(status, model) when built, else a status saying why not (never raises for the student's file)."""
    if spec.runtime == "onnxruntime-cuda":
        return _onnx_on_cuda(spec, onnx_path, threads)
    from grader.worker.tensorrt import TensorRTBuildError, TensorRTUnavailable, build_engine

    base = {"role": spec.role, "source": spec.source, "runtime": spec.runtime}
    feeds = feeds_for(source, spec.source, arrays, np.arange(1))
    try:
        engine = build_engine(onnx_path, feeds, spec.max_batch, spec.workspace_mb)
    except TensorRTUnavailable as exc:
        return DerivedStatus(**base, status="unavailable", reason=str(exc))
    except TensorRTBuildError as exc:
        return DerivedStatus(**base, status="failed", reason=str(exc)[:2000])
    except Exception as exc:  # noqa: BLE001 - whatever TensorRT raises on the student's file
        if _is_allocation_failure(exc):
            raise MemoryError(str(exc)) from None
        return DerivedStatus(**base, status="failed", reason=f"TensorRT failed: {_short(exc)}")
    status = DerivedStatus(
        **base,
        status="built",
        reason=f"built on {engine.device}"[:2000],
        version=engine.version[:64],
        build_s=engine.build_s,
    )
    return status, engine.model


def _onnx_on_cuda(spec: DerivedSpec, onnx_path: Path, threads: int) -> Derived:
    """The submitted ONNX file in ONNX Runtime's CUDA provider: what an engine is timed against."""
    from grader.contracts.job import CudaSpec

    base = {"role": spec.role, "source": spec.source, "runtime": spec.runtime}
    plan = plan_device("cuda", {"onnx"}, CudaSpec())
    if not plan.on_gpu:
        return DerivedStatus(**base, status="unavailable", reason=f"ONNX Runtime on CUDA: {plan.reason}")
    started = time.perf_counter()
    try:
        model = load_model(onnx_path, "onnx", threads, None, plan)
    except DeviceFailure as exc:
        return DerivedStatus(**base, status="unavailable", reason=f"ONNX Runtime on CUDA: {exc}"[:2000])
    except Exception as exc:  # noqa: BLE001 - the student's file in the CUDA provider
        if _is_allocation_failure(exc):
            raise MemoryError(str(exc)) from None
        return DerivedStatus(**base, status="failed", reason=f"ONNX Runtime's CUDA provider failed: {_short(exc)}")
    import onnxruntime

    status = DerivedStatus(
        **base,
        status="built",
        reason=f"ONNX Runtime CUDA provider on {plan.name or 'the GPU'}"[:2000],
        version=onnxruntime.__version__[:64],
        build_s=time.perf_counter() - started,
    )
    return status, model


def observe(job: Job, folders: dict[str, Path]) -> Observations:
    """Everything the job asks for; a student-caused failure stops it and is what it reports."""
    obs = Observations()
    session: Session | None = None
    gpu: GpuFacts | None = None
    try:
        _preload(job)
        session = Session(job, folders, obs)
        gpu = session.gpu = _gpu_facts(session.device, job)
        session.load_models()
        session.build_derived()
        session.probe()
        session.compare()
        session.heldout()
        session.time()
        session.search_log()
    except SubmissionError as error:
        obs.failure = error.problem
    except DeviceFailure:
        raise  # the machine's GPU stack, not the student: the grading ends as an error for staff
    except MemoryError:
        obs.failure = Problem(
            kind="memory_limit",
            message="the models needed more memory than the sandbox's limit allows",
            hint="Check for huge intermediate tensors (e.g. an Expand or a large MatMul) and reduce them.",
        )
    except Exception as exc:  # noqa: BLE001 - anything raised while the student's files run or their outputs are used
        traceback.print_exc()  # into the sandbox's log, which the result carries for staff
        obs.failure = Problem(
            kind="run",
            message=f"the grader could not use what the models gave it ({_short(exc)})",
            hint="Check that every model runs on inputs.npz with onnxruntime (or torch) and gives the same "
            "outputs, of the same shapes, for every batch. If it does, tell course staff: the sandbox's log is kept.",
        )
    device = session.device if session is not None else CPU
    obs.environment = environment(job, device, _gpu_end(gpu, job))
    return obs


def _gpu_facts(device: DevicePlan, job: Job) -> GpuFacts | None:
    """The GPU's facts where models run on it: all of them (``device: cuda``), or the ones the grader
    builds there (hw6's engine and its ONNX Runtime partner) on a machine with an NVIDIA device."""
    from grader.worker.device import has_nvidia_device
    from grader.worker.gpu import gpu_facts

    return gpu_facts() if device.on_gpu or (job.measure.derived and has_nvidia_device()) else None


def _gpu_end(facts: GpuFacts | None, job: Job) -> GpuFacts | None:
    """The GPU's state at the end of the run next to its start, and what moved in between."""
    if facts is None:
        return None
    from grader.worker.gpu import clocks_moved, gpu_state

    facts.end = gpu_state()
    facts.clocks_moved = clocks_moved(facts, job.measure.cuda.clock_tolerance)[:200]
    return facts


def parse_args(argv: list[str]) -> tuple[Path, str, dict[str, Path], bool]:
    """``JOB OUT [--folder NAME=PATH ...] [--wait-for-job]``: the sandbox says where it mounted each
    folder, and whether the job file is still to come."""
    parser = argparse.ArgumentParser(prog="python -m grader.worker", description="The sandboxed worker.")
    parser.add_argument("job", type=Path, help="the host's job file (JSON)")
    parser.add_argument("out", help="where to write the observations (JSON): fd:N for an inherited pipe, or a path")
    parser.add_argument(
        "--folder",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="where the folder the job calls NAME is mounted",
    )
    parser.add_argument(
        "--wait-for-job",
        action="store_true",
        help="started before the job is ready: warm the runtime, then wait for the job file to appear",
    )
    args = parser.parse_args(argv)
    folders = dict(item.split("=", 1) for item in args.folder)
    return args.job, args.out, {name: Path(path) for name, path in folders.items()}, args.wait_for_job


def wait_for_job(path: Path, limit_s: float = JOB_WAIT_S) -> bool:
    """Warm the runtime, then wait until the host has written the job (it renames the finished
    file into place, so one that exists is whole). False if none came within ``limit_s``."""
    _warm_onnxruntime()
    deadline = time.monotonic() + limit_s
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(JOB_POLL_S)
    return True


def open_output(spec: str) -> BinaryIO:
    """The channel the observations go to. On ``fd:1`` (a container's stdout) the worker's own
    prints are moved to stderr first, so nothing but the observations reaches it."""
    if not spec.startswith("fd:"):
        return open(spec, "wb")  # noqa: SIM115 - closed by main
    fd = int(spec[3:])
    if fd == 1:
        fd = os.dup(1)
        os.dup2(2, 1)
    return os.fdopen(fd, "wb")


def arm_deadline(env: dict[str, str] | os._Environ = os.environ) -> int:
    """``SIGALRM`` at ``$GRADER_DEADLINE_S`` with its default action, which ends the process even
    inside a long native call: the Docker runner's time limit when the host is no longer there.
    Returns the seconds armed (0: none)."""
    text = env.get("GRADER_DEADLINE_S", "")
    seconds = int(text) if text.isdigit() else 0
    if seconds:
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(seconds)
    return seconds


def main(argv: list[str] | None = None) -> int:
    arm_deadline()
    job_path, out, folders, wait = parse_args(sys.argv[1:] if argv is None else argv)
    if wait and not wait_for_job(job_path):
        print(f"no job at {job_path} within {JOB_WAIT_S:.0f} s", file=sys.stderr)
        return NO_JOB_EXIT
    with open_output(out) as channel:
        job = Job.model_validate_json(job_path.read_text())
        try:
            observations = observe(job, folders)
        except Exception:  # noqa: BLE001 - the grader's own bug: say so on stderr, host maps it to 'error'
            traceback.print_exc()
            return 70
        channel.write(observations.model_dump_json().encode())
    return 0
