"""Staff flags (grader.grading.flags): facts no check scores but that honest compression does not
produce, computed from real models' evidence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from grader.contracts.observations import Estimate, ModelObservation, Observations, TimingComparison
from grader.grading.figures import summarize
from grader.grading.flags import EXPLAINED_SLACK, explained_speedup, staff_flags
from grader.worker.evidence.onnx_graph import onnx_evidence
from tests.builders import export, prune_to, quantize, trained_tiny


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("flags")
    model = trained_tiny(epochs=1)
    baseline = export(model, folder / "baseline.onnx")
    pruned = export(prune_to(model, 0.5, finetune_epochs=0), folder / "pruned-fp32.onnx")
    constant = helper.make_graph(
        [
            helper.make_node("Shape", ["input"], ["s"]),
            helper.make_node("Slice", ["s", "z", "o"], ["n"]),
            helper.make_node("Concat", ["n", "c"], ["shape"], axis=0),
            helper.make_node("ConstantOfShape", ["shape"], ["logits"]),
        ],
        "constant",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [
            numpy_helper.from_array(np.array([0], np.int64), "z"),
            numpy_helper.from_array(np.array([1], np.int64), "o"),
            numpy_helper.from_array(np.array([10], np.int64), "c"),
        ],
    )
    onnx.save(helper.make_model(constant, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "constant.onnx"))
    return {
        "baseline": baseline,
        "int8": quantize(pruned, folder / "int8.onnx"),
        "constant": folder / "constant.onnx",
    }


def _observations(files: dict[str, Path], candidate: str, speedup: float) -> Observations:
    models = {
        role: ModelObservation(
            role=role, path=str(files[name]), format="onnx", evidence=onnx_evidence(onnx.load(str(files[name])))
        )
        for role, name in (("baseline", "baseline"), ("candidate", candidate))
    }
    timing = TimingComparison(
        reference="baseline",
        candidate="candidate",
        batch_size=64,
        threads=1,
        rounds=40,
        reference_ms=speedup,
        candidate_ms=1.0,
        speedup=Estimate(value=speedup, low=speedup * 0.95, high=speedup * 1.05, unit="x"),
        reference_items_per_s=64 / speedup,
        candidate_items_per_s=64.0,
    )
    return Observations(models=models, timing=[timing])


def _flags(obs: Observations) -> list[str]:
    return staff_flags(obs, {role: summarize(m.evidence) for role, m in obs.models.items()})


def test_an_honest_int8_speedup_raises_no_flag(files) -> None:
    assert _flags(_observations(files, "int8", speedup=3.5)) == []


def test_a_speedup_far_beyond_what_the_evidence_explains_is_flagged(files) -> None:
    obs = _observations(files, "int8", speedup=1.0)
    summaries = {role: summarize(m.evidence) for role, m in obs.models.items()}
    bound = explained_speedup(obs, summaries, "baseline", "candidate")
    assert 4 <= bound <= 16  # int8 arithmetic, and half the weights zero
    (flag,) = _flags(_observations(files, "int8", speedup=EXPLAINED_SLACK * bound * 3))
    assert "far beyond" in flag and f"{bound:.1f}x its evidence explains" in flag


def test_a_model_without_parameters_is_flagged(files) -> None:
    flags = _flags(_observations(files, "constant", speedup=1.0))
    assert any("'candidate': no parameters were found" in f for f in flags), flags


def test_a_flag_quoting_a_huge_name_from_the_file_stays_short(tmp_path) -> None:
    """The file picks its node names; a 100,000-character one must not blow up the report."""

    body = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y_then"])], "b", [], [helper.make_tensor_value_info("y_then", 1, None)]
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body, name="n" * 100_000)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    evidence = onnx_evidence(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    model = ModelObservation(role="candidate", path="c.onnx", format="onnx", evidence=evidence)
    flags = staff_flags(Observations(models={"candidate": model}), {"candidate": summarize(evidence)})
    assert flags and all(len(f) <= 400 for f in flags) and "the graph has a If" in flags[0]
