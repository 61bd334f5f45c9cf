"""The host's instructions to the sandboxed worker: which vetted files to load and what to measure.

A ``Job`` names every file by the folder it lies in (``submission``, ``references``,
``heldout``) and its path inside that folder, never by a host path. Each sandbox tells the worker
where it mounted each folder, so the local sandbox and the Docker container read the same job
file, unchanged. The measurement specs are the parts of ``assignment.yaml`` the worker needs.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from grader.contracts.base import Strict

Folder = Literal["submission", "references", "heldout", "vetted"]


NO_JOB_EXIT = 75  # a worker started before its job (``--wait-for-job``) that waited in vain exits with this


def session_half(session_noise: float) -> float:
    """The half-width, on the log scale, that ``session_noise`` (a relative sd between sessions)
    adds to a speedup's 95% interval: what no number of rounds in one grading can narrow."""
    return 1.96 * math.log1p(session_noise)


class Limits(Strict):
    wall_time_s: float = 180
    memory_mb: int = 4096
    model_file_mb: int = 512
    inputs_file_mb: int = 256
    search_log_mb: int = 16
    scratch_mb: int = Field(256, ge=16, description="the sandbox's private scratch space (a tmpfs)")


class TimingDecision(Strict):
    """What a check will make of a timed figure, so the worker can stop timing once no more
    rounds could change it. Filled in by the host from the assignment's checks, never by hand."""

    figure: str = Field(description="e.g. candidate_vs_baseline.speedup_b64")
    full: float
    zero: float
    points: float = Field(ge=0)
    favourable: bool = Field(True, description="the verdict reads the favourable end of the 95% interval")
    ranked: bool = Field(False, description="also plotted or ranked (a leaderboard axis): it must be precise too")


class TimingSpec(Strict):
    """Sequential interleaved timing: rounds of A B, B A until the verdict is certain.

    Timing stops, after ``min_rounds``, as soon as both ends of a figure's 95% interval give the
    same points to within ``precision_points`` (for a figure a check scores, ``decisions``), or
    the interval's width is under ``rel_width`` of the figure (for a figure only reported or
    ranked; the width this run's rounds make, without ``session_noise``, which no number of rounds
    narrows); at the latest at ``max_rounds`` or when its share of ``budget_s`` is spent.
    A scored figure whose check reads the favourable end stops "open" once this run's part of its
    interval is under ``open_width`` while the session noise's part alone spans more than
    ``precision_points``: no number of rounds narrows that part, so the verdict would stay open to
    the cap. Its interval then counts this run's part as at least ``open_width`` wide, so that
    more rounds could only narrow the favourable side by a bounded share of the figure (hw2: 0.6%,
    at most 0.25 points). A figure still open when it stops is decided by the check's documented
    rule (the favourable end of the interval), and the report says why it stopped.
    """

    threads: int = 1
    batch_sizes: list[int] = [1, 64]
    warmup: int = 3
    budget_s: float = Field(20.0, description="the cap: seconds of timing for the whole grading")
    min_rounds: int = Field(16, ge=2, description="rounds before the first look: 8 A B + B A pairs")
    max_rounds: int = 400
    precision_points: float = Field(0.25, gt=0, description="points a decided check may still differ by")
    rel_width: float = Field(
        0.05,
        gt=0,
        description="within-run interval width / figure at which a shown or ranked figure is precise enough "
        "(below the session noise's own width, 2 x 1.96 x session_noise, more rounds buy little)",
    )
    open_width: float | None = Field(
        None,
        gt=0,
        description="within-run interval width / figure at which a scored speedup whose verdict the session "
        "noise alone keeps open stops, counting this run's part as at least this wide (at most rel_width and "
        "the session noise's own width, 2 x 1.96 x session_noise); None: such a figure is timed to the cap",
    )
    session_noise: float = Field(
        0.0,
        ge=0,
        le=0.2,
        description="relative spread of a speedup between two sessions of the same files (the A/A gradings "
        "of benchmarks/timing.py measure it): added to every speedup's interval, so that a rerun, which "
        "places the models afresh, cannot flip a verdict near a threshold; more rounds cannot shrink it",
    )
    stop: Literal["verdict", "budget"] = Field(
        "verdict", description="verdict: stop once settled; budget: always spend the cap (benchmarks)"
    )
    decisions: list[TimingDecision] = Field([], description="set by the host from the checks")
    inputs: Literal["team", "heldout"] = Field(
        "team",
        description="where timed batches are drawn from: the team's inputs.npz, or the course's held-out "
        "inputs (the final project: a team's own inputs could be chosen to trigger a shortcut)",
    )

    @model_validator(mode="after")
    def _open_needs_session_noise(self) -> TimingSpec:
        """An open stop means the session noise's part keeps the verdict open: there must be one,
        and this run's part must be the smaller (and no wider than a ranked figure needs)."""
        if self.open_width is None:
            return self
        if not self.session_noise:
            raise ValueError(
                "open_width needs session_noise: without it, more rounds can always close a verdict, "
                "so timing must not stop it open"
            )
        noise_width = 2 * math.sinh(session_half(self.session_noise))
        if self.open_width > min(self.rel_width, noise_width):
            raise ValueError(
                f"open_width {self.open_width:g} must be at most rel_width ({self.rel_width:g}) and the session "
                f"noise's own width ({noise_width:.3f}, 2 x 1.96 x session_noise): wider, a figure would stop "
                "open before it is precise, or while this run's part is most of its interval"
            )
        return self


class Pair(Strict):
    """Compare ``candidate``'s outputs with ``reference``'s (and time them interleaved).

    ``atol`` / ``rtol`` set the per-output parity tolerance (``np.allclose`` semantics); every
    pair reports it, checks decide whether it matters.
    """

    reference: str
    candidate: str
    atol: float = 1e-4
    rtol: float = 1e-3
    timed: bool = True


class ProbeSpec(Strict):
    """Run the first ``batch_size`` samples one at a time and as one batch, for these roles."""

    roles: list[str]
    batch_size: int = Field(8, ge=2, le=256)
    atol: float = 1e-4
    rtol: float = 1e-3


class HeldoutSpec(Strict):
    """Accuracy of ``roles`` on the course's labelled data (``inputs`` under the references folder)."""

    inputs: str
    roles: list[str]


class DerivedSpec(Strict):
    """A model the grader builds on the grading machine from a submitted one (engines do not travel).

    ``tensorrt``: an engine built from the ONNX file; ``onnxruntime-cuda``: the same ONNX file in
    ONNX Runtime's CUDA provider, the fair partner to time an engine against on the same GPU.
    """

    role: str
    source: str
    runtime: Literal["tensorrt", "onnxruntime-cuda"]
    claim: str | None = Field(None, description="built only when the submission claims this key as true")
    max_batch: int = Field(256, ge=1)
    workspace_mb: int = Field(2048, ge=64)


Device = Literal["cpu", "cuda", "auto"]


class CudaSpec(Strict):
    """How models are run and timed on a CUDA device (``device: cuda`` or ``auto`` on a GPU machine)."""

    onnx_provider: Literal["cuda", "tensorrt"] = Field(
        "cuda",
        description="ONNX Runtime's CUDAExecutionProvider, or its TensorrtExecutionProvider (fp16 / int8 "
        "enabled only where the file itself stores fp16 weights / Q-DQ nodes)",
    )
    warmup_s: float = Field(2.0, ge=0, le=60, description="least warm-up time, so the GPU's clocks settle")
    max_warmup_s: float = Field(10.0, ge=0, le=120, description="warm-up ends here even if times still move")
    clock_tolerance: float = Field(
        0.05, gt=0, description="a move of the SM clock by more than this share during the run is warned about"
    )


class MeasureSpec(Strict):
    device: Device | None = Field(
        None,
        description="where models are run and timed: cpu, cuda (figures pending on a machine without one) or "
        "auto (cuda where there is one); unset: course.yaml's measure.device, else cpu",
    )
    cuda: CudaSpec = CudaSpec()
    compare: list[Pair] = []
    timing: TimingSpec = TimingSpec()
    solo: list[str] = Field([], description="roles timed alone at every timing batch size")
    probe: ProbeSpec | None = None
    heldout: HeldoutSpec | None = None
    derived: list[DerivedSpec] = []
    fidelity_batch_size: int = 256
    max_samples: int = 4096


class FileRef(Strict):
    """A file by the folder it lies in and its POSIX path inside that folder."""

    folder: Folder
    path: str = Field(min_length=1, max_length=1024)

    @field_validator("path")
    @classmethod
    def _inside(cls, value: str) -> str:
        pure = PurePosixPath(value)
        if pure.is_absolute() or ".." in pure.parts:
            raise ValueError(f"{value!r} must be a relative path inside its folder")
        return value

    def resolve(self, folders: dict[str, Path]) -> Path:
        """Where the file is, given where each folder is mounted."""
        return folders[self.folder] / self.path


class ModelJob(Strict):
    role: str
    file: FileRef
    format: str
    architecture: str | None = None
    trusted: bool = False  # a course reference model: if it cannot run here, that is noted, not charged
    name: str = Field("", max_length=1024, description="the file as submitted (its path in the submission folder)")

    @property
    def display_name(self) -> str:
        """How reports name the file: its path in the submission, or ``reference:<path>``."""
        if self.trusted:
            return f"reference:{self.name or self.file.path}"
        return self.name or self.file.path


class SearchLogJob(Strict):
    file: FileRef
    format: str
    study: str | None = None


class Job(Strict):
    models: list[ModelJob]
    inputs: FileRef | None
    measure: MeasureSpec
    heldout_inputs: FileRef | None = None  # trusted labelled data for measure.heldout
    search_log: SearchLogJob | None = None

    def files(self) -> list[FileRef]:
        """Every file the worker will open."""
        refs = [m.file for m in self.models] + [r for r in (self.inputs, self.heldout_inputs) if r is not None]
        return refs + ([self.search_log.file] if self.search_log else [])

    def folders(self) -> set[str]:
        """The folders this job reads from (and so the only ones a sandbox mounts)."""
        return {ref.folder for ref in self.files()}
