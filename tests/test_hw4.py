"""hw4-distillation end to end, against the course's real teacher and from-scratch student."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.contracts.result import CheckStatus
from reference.digits_cnn import DigitsStudent
from tests import builders
from tests.builders import check_of
from tests.grading import grade

HW4 = "hw4-distillation"


@pytest.fixture(scope="module")
def files(reference_paths, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hw4")
    torch.manual_seed(0)
    no_labels = folder / "no_labels.npz"
    with np.load(reference_paths["eval_npz"]) as data:
        np.savez(no_labels, input=data["input"])
    return {
        "teacher": reference_paths["model_onnx"],
        "distilled": reference_paths["hw4_student"],
        "scratch": reference_paths["student_scratch"],
        "untrained": builders.export(DigitsStudent().eval(), folder / "untrained.onnx"),
        "tiny": builders.export(builders.trained_tiny(epochs=4), folder / "tiny.onnx"),
        "inputs": reference_paths["eval_npz"],
        "no_labels": no_labels,
    }


@pytest.fixture(scope="module")
def graded(files, fast_root: Path, tmp_path_factory: pytest.TempPathFactory):
    cache: dict[tuple, object] = {}

    def run(student: str, teacher: str = "teacher", inputs: str = "inputs"):
        key = (student, teacher, inputs)
        if key not in cache:
            folder = builders.submission(
                tmp_path_factory.mktemp(student),
                {"teacher": files[teacher], "student": files[student]},
                files[inputs],
                assignment=HW4,
            )
            cache[key] = grade(folder, fast_root).result
        return cache[key]

    return run


def test_the_distilled_student_passes_and_the_bonus_matches_the_build(graded, reference_paths) -> None:
    result = graded("distilled")
    assert all(c.status is CheckStatus.PASS for c in result.checks if not c.bonus), [c.message for c in result.checks]
    assert result.score >= result.max_score == 100
    built = json.loads(reference_paths["stamp"].read_text())["summary"]
    bonus = check_of(result, "beats_scratch")
    assert bonus.bonus and (bonus.status is CheckStatus.PASS) == built["hw4_student_beats_scratch"]
    assert result.metrics["student.heldout_accuracy"].value == pytest.approx(built["hw4_accuracy_student"])
    assert result.metrics["scratch.heldout_accuracy"].value == pytest.approx(built["hw4_accuracy_scratch"])
    assert "reference:models/digits_student_scratch.onnx" not in result.submission.files


def test_a_student_as_big_as_the_teacher_fails_smaller(graded) -> None:
    result = graded("teacher")
    smaller = check_of(result, "smaller")
    assert smaller.status is CheckStatus.FAIL
    assert "100.0% of 'teacher''s parameters" in smaller.message and "MACs" in smaller.message


def test_an_untrained_student_fails_agreement_and_accuracy(graded) -> None:
    result = graded("untrained")
    assert check_of(result, "smaller").status is CheckStatus.PASS
    agreement = check_of(result, "agreement")
    assert agreement.status is CheckStatus.FAIL and "KL" in agreement.message
    assert check_of(result, "accuracy").status is CheckStatus.FAIL
    bonus = check_of(result, "beats_scratch")
    assert bonus.status is CheckStatus.FAIL and "does not beat" in bonus.message and bonus.points == 0


def test_the_scratch_student_itself_does_not_beat_itself(graded) -> None:
    bonus = check_of(graded("scratch"), "beats_scratch")
    assert bonus.status is CheckStatus.FAIL and "does not beat" in bonus.message


def test_another_architecture_makes_the_bonus_not_applicable(graded) -> None:
    result = graded("tiny")
    bonus = check_of(result, "beats_scratch")
    assert bonus.status is CheckStatus.SKIPPED and "Not applicable" in bonus.message and not bonus.pending
    assert check_of(result, "smaller").status is CheckStatus.PASS


def test_inputs_without_labels_fail_accuracy_with_the_fix(graded) -> None:
    result = graded("distilled", inputs="no_labels")
    accuracy = check_of(result, "accuracy")
    assert accuracy.status is CheckStatus.FAIL and "labels" in accuracy.message
    assert check_of(result, "beats_scratch").status is not CheckStatus.SKIPPED  # held-out labels are the course's
