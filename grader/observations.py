"""What the sandboxed worker saw: evidence from the model files and measurements of them.

This is the contract between the worker (which touches student models) and the host (which
grades). The host parses it with these models and nothing else, so a worker that was subverted
by a hostile model can at worst lie about figures, never inject code or fields.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Unknown fields are an error: the host must not silently accept what it did not ask for."""

    model_config = ConfigDict(extra="forbid")


class Estimate(Strict):
    """A figure, with a 95% confidence interval where it was measured repeatedly."""

    value: float | None
    low: float | None = None
    high: float | None = None
    unit: str = ""


class TensorEvidence(Strict):
    """One weight tensor as stored in the file (not as the framework reports it)."""

    name: str = Field(max_length=512)
    layer: str = Field(max_length=128, description="op type that consumes the weight")
    stored_dtype: str = Field(max_length=32)
    bits: int
    shape: list[int]
    numel: int
    zeros: int = Field(description="exact zeros; for quantized tensors, values equal to the zero point")
    near_zeros: int = Field(0, description="not zero but within 1e-6 of the tensor's largest magnitude")
    distinct: int
    quantized: bool = Field(description="stored as an integer of <= 8 bits and dequantized by the graph")
    prunable: bool = Field(description="a conv / linear / matmul weight")


class ModelEvidence(Strict):
    """What the file itself proves, independent of any claim."""

    format: str
    params_total: int = Field(description="elements of every weight the graph really uses")
    weights: list[TensorEvidence] = Field(max_length=100_000)
    op_types: dict[str, int] = {}
    notes: list[str] = []


class IOSpec(Strict):
    name: str = Field(max_length=256)
    shape: list[int | str | None]
    dtype: str = Field(max_length=32)


class ModelObservation(Strict):
    role: str
    path: str
    format: str
    size_bytes: int
    gzip_bytes: int
    evidence: ModelEvidence
    inputs: list[IOSpec] = []
    outputs: list[IOSpec] = []
    load_s: float | None = None
    peak_rss_mb: float | None = Field(None, description="resident memory added by loading and one batch")
    accuracy: float | None = None


class TimingComparison(Strict):
    """Reference and candidate timed interleaved in one process: the ratio is the figure."""

    reference: str
    candidate: str
    batch_size: int
    threads: int
    rounds: int
    reference_ms: float
    candidate_ms: float
    speedup: Estimate
    reference_items_per_s: float
    candidate_items_per_s: float


class FidelityComparison(Strict):
    reference: str
    candidate: str
    samples: int
    top1_agreement: float | None
    snr_db: float | None
    max_abs_error: float | None


class Failure(Strict):
    """Why the worker could not finish; always something the student can act on."""

    kind: Literal["format", "load", "run", "time_limit", "memory_limit", "input"]
    role: str | None = None
    message: str = Field(max_length=4000)
    hint: str = Field("", max_length=2000)


class Environment(Strict):
    cpu: str = ""
    cores: int | None = None
    threads: int | None = None
    gpu: str = "none"
    sandbox: str = ""
    data: str = Field("", description="which evaluation split was used: 'public' or 'held-out'")
    python: str = ""
    platform: str = ""
    libraries: dict[str, str] = {}


class Observations(Strict):
    """Everything the worker reports; ``failure`` set means grading stops at the gate."""

    models: dict[str, ModelObservation] = {}
    timing: list[TimingComparison] = []
    fidelity: list[FidelityComparison] = []
    environment: Environment = Environment()
    failure: Failure | None = None
