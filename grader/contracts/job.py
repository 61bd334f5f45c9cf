"""The host's instructions to the sandboxed worker: which vetted files to load and what to measure."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from grader.config.assignment import MeasureSpec


class ModelJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    path: str
    relpath: str
    format: str
    architecture: str | None = None
    trusted: bool = False  # a course reference model: if it cannot run here, that is noted, not charged


class SearchLogJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    format: str
    study: str | None = None


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelJob]
    inputs: str | None
    measure: MeasureSpec
    output: str
    sandbox: str = ""
    heldout_inputs: str | None = None  # trusted labelled data for measure.heldout
    search_log: SearchLogJob | None = None
