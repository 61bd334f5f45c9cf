"""What both runners share: the worker's output read as hostile input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from grader.observations import Observations
from grader.runner import MAX_OUTPUT_BYTES, WorkerError, read_observations


def test_valid_output_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "observations.json"
    path.write_text(Observations().model_dump_json())
    assert read_observations(path, 0, "") == Observations()


def test_symlinked_output_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.json"
    secret.write_text(Observations().model_dump_json())  # would even validate, were it read
    (tmp_path / "observations.json").symlink_to(secret)
    with pytest.raises(WorkerError, match="cannot be opened safely"):
        read_observations(tmp_path / "observations.json", 0, "")


def test_fifo_output_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "observations.json")
    with pytest.raises(WorkerError, match="not a regular file"):
        read_observations(tmp_path / "observations.json", 0, "")


def test_oversized_output_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "observations.json"
    with open(path, "wb") as handle:
        handle.truncate(MAX_OUTPUT_BYTES + 1)
    with pytest.raises(WorkerError, match="larger than allowed"):
        read_observations(path, 0, "")


def test_unknown_fields_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "observations.json"
    path.write_text('{"models": {}, "score_override": 100}')
    with pytest.raises(WorkerError, match="does not match the schema"):
        read_observations(path, 0, "")


def test_missing_output_and_crashes(tmp_path: Path) -> None:
    with pytest.raises(WorkerError, match="without writing its output: boom"):
        read_observations(tmp_path / "none.json", 0, "boom")
    with pytest.raises(WorkerError, match="exited with 70"):
        read_observations(tmp_path / "none.json", 70, "Traceback ...")
    crashed = read_observations(tmp_path / "none.json", -11, "")
    assert crashed.failure is not None and crashed.failure.kind == "run" and "SIGSEGV" in crashed.failure.message
