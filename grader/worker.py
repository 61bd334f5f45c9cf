"""The sandboxed worker: loads the student's models, gathers evidence, measures, writes JSON.

Run as ``python -m grader.worker JOB.json`` by ``grader.sandbox`` only. Every failure a student
can cause ends as an ``Observations.failure`` with a message, never as a traceback; the host
treats the output file as untrusted and validates it.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from grader.job import Job, ModelJob
from grader.measure import (
    accuracy,
    gzip_size,
    max_abs_error,
    peak_rss_mb,
    ratio_estimate,
    reset_peak_rss,
    rss_mb,
    snr_db,
    time_interleaved,
    top1_agreement,
)
from grader.observations import (
    Environment,
    Failure,
    FidelityComparison,
    ModelObservation,
    Observations,
    TimingComparison,
)
from grader.runtime import Feeds, LoadedModel, load_model

ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


class StudentFault(Exception):
    """Raised inside the worker for anything the student's files caused."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def load_inputs(path: str | None, max_samples: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if path is None:
        raise StudentFault(Failure(kind="input", message="no inputs were given", hint="Add data.inputs to submission.yaml."))
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k][:max_samples] for k in archive.files}
    except ValueError as exc:
        raise StudentFault(Failure(kind="input", message=f"inputs file cannot be read without pickle: {exc}",
                                   hint="Save plain numeric arrays with np.savez.")) from None
    labels = arrays.pop("labels", None)
    if not arrays:
        raise StudentFault(Failure(kind="input", message="inputs file holds no input arrays",
                                   hint="Store each model input under its input name, e.g. np.savez(f, input=x)."))
    sizes = {a.shape[0] if a.ndim else 0 for a in arrays.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise StudentFault(Failure(kind="input", message="input arrays must share a non-empty first (batch) axis",
                                   hint="Stack samples along axis 0."))
    return arrays, labels


def feeds_for(model: LoadedModel, role: str, arrays: dict[str, np.ndarray], index: np.ndarray) -> Feeds:
    """Select rows ``index`` of each input the model declares, matching names (or the only array)."""
    names = model.input_names
    if all(n in arrays for n in names):
        chosen = {n: arrays[n] for n in names}
    elif len(names) == 1 and len(arrays) == 1:
        chosen = {names[0]: next(iter(arrays.values()))}
    else:
        raise StudentFault(Failure(
            kind="input", role=role,
            message=f"model '{role}' expects inputs {names} but inputs.npz has {sorted(arrays)}",
            hint="Save one array per model input, keyed by the input's name."))
    feeds = {}
    for spec in model.inputs:
        value = chosen[spec.name][index]
        want = ORT_DTYPES.get(spec.dtype)
        feeds[spec.name] = value.astype(want) if want is not None and value.dtype != want else value
    return feeds


def run_all(model: LoadedModel, role: str, arrays: dict[str, np.ndarray], batch: int) -> list[np.ndarray]:
    """Outputs for every sample, in chunks (padding the last one when the batch size is frozen)."""
    total = next(iter(arrays.values())).shape[0]
    fixed = model.fixed_batch()
    step = fixed or batch
    chunks: list[list[np.ndarray]] = []
    for start in range(0, total, step):
        index = np.arange(start, start + step) % total if fixed else np.arange(start, min(start + step, total))
        outputs = _call(model, role, feeds_for(model, role, arrays, index))
        keep = min(step, total - start)
        chunks.append([o[:keep] for o in outputs])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


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
        raise StudentFault(Failure(kind="run", role=role, message=f"model '{role}' failed to run: {_short(exc)}",
                                   hint="Run it yourself with the same inputs.npz (e.g. in onnxruntime) and fix the error.")) from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:600] if text else ''}"


def observe_model(job: ModelJob, threads: int, arrays: dict[str, np.ndarray], labels: np.ndarray | None,
                  batch: int) -> tuple[ModelObservation, LoadedModel, list[np.ndarray]]:
    reset_peak_rss()
    before = rss_mb()
    started = time.perf_counter()
    try:
        model = load_model(Path(job.path), job.format, threads, job.architecture)
    except Exception as exc:  # noqa: BLE001
        if _is_allocation_failure(exc):
            raise MemoryError(str(exc)) from None
        raise StudentFault(Failure(kind="load", role=job.role, message=f"model '{job.role}' ('{job.relpath}') failed to load: {_short(exc)}",
                                   hint="Check that the file loads on your machine with the format's own loader.")) from None
    load_s = time.perf_counter() - started
    outputs = run_all(model, job.role, arrays, batch)
    path = Path(job.path)
    observation = ModelObservation(
        role=job.role, path=job.relpath, format=job.format,
        size_bytes=path.stat().st_size, gzip_bytes=gzip_size(path), evidence=model.evidence,
        inputs=model.inputs, outputs=model.outputs, load_s=load_s,
        peak_rss_mb=max(peak_rss_mb() - before, 0.0),
        accuracy=accuracy(outputs[0], labels) if labels is not None and outputs else None,
    )
    return observation, model, outputs


def compare_outputs(ref: str, cand: str, ref_out: list[np.ndarray], cand_out: list[np.ndarray]) -> FidelityComparison:
    a, b = ref_out[0], cand_out[0]
    return FidelityComparison(reference=ref, candidate=cand, samples=int(a.shape[0]) if a.ndim else 1,
                              top1_agreement=top1_agreement(a, b), snr_db=snr_db(a, b), max_abs_error=max_abs_error(a, b))


def time_pair(ref: str, cand: str, models: dict[str, LoadedModel], arrays: dict[str, np.ndarray],
              batch: int, job: Job, budget: float) -> TimingComparison:
    fixed = {models[r].fixed_batch() for r in (ref, cand)} - {None}
    batch = fixed.pop() if len(fixed) == 1 else batch
    total = next(iter(arrays.values())).shape[0]
    index = np.arange(batch) % total
    feeds = {r: feeds_for(models[r], r, arrays, index) for r in (ref, cand)}
    timing = job.measure.timing
    times = time_interleaved(lambda: models[ref].run(feeds[ref]), lambda: models[cand].run(feeds[cand]),
                             budget_s=budget, warmup=timing.warmup, min_rounds=timing.min_rounds,
                             max_rounds=timing.max_rounds)
    ref_ms, cand_ms = float(np.median(times.reference_s)) * 1e3, float(np.median(times.candidate_s)) * 1e3
    return TimingComparison(reference=ref, candidate=cand, batch_size=batch, threads=timing.threads, rounds=times.rounds,
                            reference_ms=ref_ms, candidate_ms=cand_ms, speedup=ratio_estimate(times),
                            reference_items_per_s=batch / ref_ms * 1e3, candidate_items_per_s=batch / cand_ms * 1e3)


def environment(job: Job) -> Environment:
    libraries = {"numpy": np.__version__}
    for name in ("onnxruntime", "onnx", "torch"):
        module = sys.modules.get(name)
        if module is not None:
            libraries[name] = getattr(module, "__version__", "?")
    return Environment(cpu=_cpu_name(), cores=os.cpu_count(), threads=job.measure.timing.threads, gpu=gpu_name(),
                       sandbox=job.sandbox, python=platform.python_version(), platform=platform.platform(),
                       libraries=libraries)


def gpu_name(driver_proc: Path = Path("/proc/driver/nvidia/gpus")) -> str:
    """The GPU(s) this process can see, or "none".

    Torch, where already loaded, asks CUDA; otherwise the NVIDIA driver's own listing, which the
    container toolkit exposes only for the GPUs passed into a container, so grading ONNX models
    does not need torch just to say which GPU was there.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    names = []
    for info in sorted(driver_proc.glob("*/information")):
        try:
            lines = info.read_text(errors="replace").splitlines()
        except OSError:
            continue
        names += [line.split(":", 1)[1].strip() for line in lines if line.startswith("Model:")]
    return ", ".join(names)[:200] or "none"


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


def _warm_onnxruntime() -> None:
    """Create one trivial session so runtime set-up is not charged to the first model's memory."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "warm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    session.run(None, {"x": np.zeros(1, np.float32)})
    del onnx


def observe(job: Job) -> Observations:
    threads = job.measure.timing.threads
    obs = Observations()
    try:
        _preload(job)
        arrays, labels = load_inputs(job.inputs, job.measure.max_samples)
        loaded: dict[str, LoadedModel] = {}
        outputs: dict[str, list[np.ndarray]] = {}
        for model_job in job.models:
            observation, loaded[model_job.role], outputs[model_job.role] = observe_model(
                model_job, threads, arrays, labels, job.measure.fidelity_batch_size)
            obs.models[model_job.role] = observation
        for pair in job.measure.compare:
            obs.fidelity.append(compare_outputs(pair.reference, pair.candidate, outputs[pair.reference], outputs[pair.candidate]))
        batches = job.measure.timing.batch_sizes
        budget = job.measure.timing.budget_s / max(1, len(batches) * len(job.measure.compare))
        for pair in job.measure.compare:
            for batch in batches:
                obs.timing.append(time_pair(pair.reference, pair.candidate, loaded, arrays, batch, job, budget))
    except StudentFault as fault:
        obs.failure = fault.failure
    except MemoryError:
        obs.failure = Failure(kind="memory_limit",
                              message="the models needed more memory than the sandbox's limit allows",
                              hint="Check for huge intermediate tensors (e.g. an Expand or a large MatMul) and reduce them.")
    obs.environment = environment(job)
    return obs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job = Job.model_validate_json(Path(argv[0]).read_text())
    try:
        observations = observe(job)
    except Exception:  # noqa: BLE001 - the grader's own bug: say so on stderr, host maps it to 'error'
        traceback.print_exc()
        return 70
    Path(job.output).write_text(observations.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
