"""What the sandboxed worker saw: evidence from the model files and measurements of them.

This is the contract between the worker (which touches student models) and the host (which
grades). The host parses it with these models and nothing else, so a worker that was subverted
by a hostile model can at worst lie about figures, never inject code or fields.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from grader.contracts.base import Strict
from grader.contracts.problem import Problem
from grader.contracts.searchlog import SearchLogObservation

# what a worker (or a sandbox on its behalf) may report as the reason it stopped
WORKER_PROBLEM_KINDS = frozenset({"format", "load", "run", "time_limit", "memory_limit", "input"})


class Estimate(Strict):
    """A figure, with a 95% confidence interval where it was measured repeatedly."""

    value: float | None
    low: float | None = None
    high: float | None = None
    unit: str = ""
    note: str = Field("", max_length=1000, description="why there is no value, or what the value leaves out")
    pending: bool = Field(
        False,
        description="not measured here: it needs hardware this machine lacks (the course's GPU runner measures it)",
    )


MAX_SAMPLES = 100_000  # predictions reported per model (the job asks for at most max_samples)
PALETTE_MAX = 256  # above this many distinct values a codebook saves nothing over int8


class TensorEvidence(Strict):
    """One weight as a compute op consumes it (decoded: codes with their scales and zero points),
    and how the tensors it is computed from are stored in the file (not as the framework reports it)."""

    name: str = Field(max_length=512)
    layer: str = Field(max_length=128, description="op type that consumes the weight")
    stored_dtype: str = Field(max_length=32)
    bits: int
    shape: list[int]
    numel: int
    zeros: int = Field(
        description="exact zeros of the decoded weight; for quantized codes, codes equal to the zero point"
    )
    near_zeros: int = Field(0, description="not zero but within 1e-6 of the tensor's largest magnitude")
    distinct: int = Field(description="distinct decoded values, counted exactly (-1: tensor too large to count)")
    distinct_within_noise: int | None = Field(
        None,
        description="distinct values once values closer than 1e-5 of the largest magnitude are merged; "
        "diagnostic only, never used to pass a check",
    )
    quantized: bool = Field(description="stored as an integer of <= 8 bits and dequantized by the graph")
    prunable: bool = Field(description="a conv / linear / matmul weight")


class OnnxFacts(Strict):
    """What ``onnx.checker`` (full check, strict shape inference) says about an ONNX file."""

    opset: int | None = Field(description="version of the default ('ai.onnx') operator set")
    ir_version: int
    producer: str = Field("", max_length=128)
    checker_error: str | None = Field(None, max_length=2000, description="the checker's complaint, if any")
    shape_inference_error: str | None = Field(None, max_length=2000)


class ModelEvidence(Strict):
    """What the file itself proves, independent of any claim."""

    format: str
    params_total: int = Field(description="elements of every weight the graph really uses")
    weights: list[TensorEvidence] = Field(max_length=100_000)
    op_types: dict[str, int] = {}
    notes: list[str] = []
    flags: list[str] = Field(
        [],
        max_length=100,
        description="what the file does that honest compression does not need (weights computed from the "
        "inputs, control flow): shown in the report and flagged for staff, never scored",
    )
    onnx: OnnxFacts | None = None


class IOSpec(Strict):
    name: str = Field(max_length=256)
    shape: list[int | str | None]
    dtype: str = Field(max_length=32)


class ModelObservation(Strict):
    role: str
    path: str
    format: str
    evidence: ModelEvidence
    inputs: list[IOSpec] = []
    outputs: list[IOSpec] = []
    load_s: float | None = None
    peak_rss_mb: float | None = Field(None, description="resident memory added by loading and one batch")
    top1: list[int] | None = Field(
        None,
        max_length=MAX_SAMPLES,
        description="each sample's predicted class (the first output's argmax, where "
        "it is [N, classes]): the host scores it against the labels, the worker never sees an answer key",
    )
    macs_per_sample: int | None = Field(
        None, description="multiply-accumulates of one batch-1 inference (conv / matmul / gemm; FLOPs = 2 x MACs)"
    )
    macs_note: str = Field("", max_length=1000, description="how MACs were counted, or why they could not be")
    device: str = Field("cpu", max_length=16, description="where it ran: cpu or cuda")
    gpu_peak_mb: float | None = Field(None, description="device memory added by loading and one batch, on a GPU")
    gpu_memory_note: str = Field("", max_length=300, description="how GPU memory was measured, or why it was not")
    trusted: bool = Field(False, description="a course reference model, not a file from the submission")


class TimedOutputs(Strict):
    """What a model answered while it was timed, held against its own answers outside timing on
    the same inputs: a model that computes something else when timed (a shortcut, a cache) is
    caught here, and its timing is not believed."""

    role: str
    rounds_checked: int
    top1_agreement: float | None = Field(None, description="timed vs untimed top-1 answers, for class scores")
    snr_db: float | None = Field(None, description="untimed outputs over their difference from the timed ones")
    consistent: bool
    note: str = Field("", max_length=500)


class TimingComparison(Strict):
    """Reference and candidate timed interleaved in one process: the ratio is the figure.

    Every round feeds both models the same batch, drawn afresh from the evaluation inputs (rows in
    a new order, float inputs with a little noise), so neither a cache nor a shortcut keyed on the
    inputs is timed; ``timed_outputs`` says whether what was timed is what was checked. A pair
    that could not be timed at this batch size has ``rounds`` 0, no times and a note saying why.
    """

    reference: str
    candidate: str
    batch_size: int
    threads: int
    rounds: int
    reference_ms: float | None
    candidate_ms: float | None
    speedup: Estimate
    reference_items_per_s: float | None
    candidate_items_per_s: float | None
    timed_outputs: list[TimedOutputs] = []
    note: str = Field("", max_length=1000)
    stopped: Literal["", "settled", "open", "budget", "max_rounds"] = Field(
        "",
        description="settled: no more rounds could change the verdict; open: the session noise keeps it open "
        "whatever the rounds, and this run's part of the interval was under open_width; budget / max_rounds: "
        "the cap",
    )
    device: str = Field("cpu", max_length=16, description="where both models ran and were timed: cpu or cuda")
    reference_transfer_ms: float | None = Field(
        None, description="on a GPU: median host-to-device input plus device-to-host output copy, outside the latency"
    )
    candidate_transfer_ms: float | None = None


class OutputParity(Strict):
    """One output of the candidate against the same output of the reference."""

    name: str = Field(max_length=256)
    shape: list[int]
    max_abs_error: float | None
    max_rel_error: float | None = Field(description="max |cand - ref| / max(|ref|, 1e-6 * max|ref|)")
    tolerance_ratio: float | None = Field(description="max |cand - ref| / (atol + rtol * |ref|): <= 1 is allclose")
    nonfinite: int = 0
    note: str = Field("", max_length=500)


class FidelityComparison(Strict):
    reference: str
    candidate: str
    samples: int
    top1_agreement: float | None
    snr_db: float | None
    max_abs_error: float | None
    kl_divergence: float | None = Field(None, description="mean KL(softmax(reference) || softmax(candidate)), nats")
    atol: float | None = None
    rtol: float | None = None
    outputs: list[OutputParity] = Field([], max_length=64, description="every output, compared by position")
    output_kind: Literal["classes", "values"] = Field(
        "classes",
        description="classes: the first output is [N, classes >= 2] scores (judged by top-1 agreement); "
        "values: anything else, e.g. a regressor's [N, 1] or [N] (judged by SNR and relative error)",
    )
    note: str = Field("", max_length=500)


class SoloTiming(Strict):
    """One model timed alone (no partner to interleave with): a median with a 95% interval, on
    batches drawn like ``TimingComparison``'s and checked the same way."""

    role: str
    batch_size: int
    threads: int
    rounds: int
    latency_ms: Estimate
    items_per_s: float | None
    timed_outputs: list[TimedOutputs] = []
    note: str = Field("", max_length=1000)
    stopped: Literal["", "settled", "budget", "max_rounds"] = ""  # a latency is never "open": nothing scores it
    device: str = Field("cpu", max_length=16)
    transfer_ms: float | None = Field(None, description="on a GPU: median input and output copies, outside the latency")


class BatchProbe(Strict):
    """The same samples run one at a time, then as one batch, then as that batch again."""

    role: str
    batch_size: int
    fixed_batch: int | None = Field(None, description="batch size an input is frozen to in the file")
    single_ok: bool
    batch_ok: bool
    error: str = Field("", max_length=2000)
    single_shapes: list[list[int]] = Field([], max_length=64)
    single_shapes_stable: bool = Field(False, description="every batch-1 run gave outputs of the same shapes")
    batch_shapes: list[list[int]] = Field([], max_length=64)
    shapes_consistent: bool = Field(False, description="batch outputs = N x the single outputs' shape")
    outputs: list[OutputParity] = Field([], max_length=64, description="batch rows against the single runs")
    repeat_max_abs_error: float | None = Field(None, description="the same batch run twice")


class HeldoutPredictions(Strict):
    """A model's answers on the course's evaluation inputs. Their labels never enter the sandbox:
    the host scores these predictions itself."""

    role: str
    samples: int = 0
    top1: list[int] | None = Field(None, max_length=MAX_SAMPLES)
    error: str = Field("", max_length=2000)


class DerivedStatus(Strict):
    """A model the grader builds itself from a submitted one (e.g. a TensorRT engine from ONNX)."""

    role: str
    source: str
    runtime: str
    status: Literal["built", "unavailable", "failed"]
    reason: str = Field("", max_length=2000)
    version: str = Field("", max_length=64)
    build_s: float | None = None


class GpuState(Strict):
    """Clocks, temperature and power of the GPU at one moment (start or end of the run)."""

    sm_clock_mhz: int | None = None
    memory_clock_mhz: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    throttle_reasons: str = Field("", max_length=32, description="NVML's active clock-throttle reasons (bit mask)")


class GpuFacts(Strict):
    """The GPU a grading ran on, as NVML / nvidia-smi describe it (bounded strings: they reach reports)."""

    name: str = Field("", max_length=200)
    uuid: str = Field("", max_length=64)
    driver: str = Field("", max_length=32)
    compute_capability: str = Field("", max_length=16)
    memory_mb: int | None = None
    persistence_mode: str = Field("", max_length=16)
    max_sm_clock_mhz: int | None = None
    start: GpuState | None = None
    end: GpuState | None = None
    clocks_moved: str = Field("", max_length=200, description="what moved beyond the tolerance during the run")


class Environment(Strict):
    """Where a grading ran. Bounded: these strings reach reports, so a worker cannot use them to
    carry anything larger than a name out of the sandbox."""

    cpu: str = Field("", max_length=200)
    cores: int | None = None
    threads: int | None = None
    gpu: str = Field("none", max_length=200)
    device: str = Field("cpu", max_length=300, description="where models ran and were timed, and why not on a GPU")
    device_pending: bool = Field(False, description="the assignment measures on CUDA and this machine could not")
    device_reason: str = Field("", max_length=300, description="why a GPU the assignment asks for was not used")
    gpu_facts: GpuFacts | None = None
    sandbox: str = Field("", max_length=300)
    data: str = Field("", max_length=32, description="which evaluation split was used: 'public' or 'held-out'")
    python: str = Field("", max_length=64)
    platform: str = Field("", max_length=200)
    libraries: dict[str, str] = Field({}, max_length=16)

    @field_validator("libraries")
    @classmethod
    def _short_versions(cls, value: dict[str, str]) -> dict[str, str]:
        if any(len(k) > 32 or len(v) > 64 for k, v in value.items()):
            raise ValueError("library names and versions are short strings")
        return value


class Observations(Strict):
    """Everything the worker reports; ``failure`` set means grading stops at the gate."""

    models: dict[str, ModelObservation] = {}
    timing: list[TimingComparison] = []
    fidelity: list[FidelityComparison] = []
    solo_timing: list[SoloTiming] = []
    probes: list[BatchProbe] = []
    heldout: list[HeldoutPredictions] = []
    derived: list[DerivedStatus] = []
    unavailable: dict[str, str] = Field({}, description="trusted reference models that could not run, and why")
    search_log: SearchLogObservation | None = None
    environment: Environment = Environment()
    failure: Problem | None = Field(None, description="what stopped the worker, phrased for the student")

    @field_validator("failure")
    @classmethod
    def _bounded(cls, failure: Problem | None) -> Problem | None:
        """The worker's account of a failure goes into a report: only known kinds, bounded text."""
        if failure is None:
            return None
        if failure.kind not in WORKER_PROBLEM_KINDS:
            raise ValueError(f"unknown failure kind {failure.kind!r}")
        if len(failure.message) > 4000 or len(failure.hint) > 2000 or len(failure.field or "") > 128:
            raise ValueError("failure text is longer than allowed")
        return failure
