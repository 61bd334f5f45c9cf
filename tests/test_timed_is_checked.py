"""What is timed is what is checked: a model that answers differently while the clock runs gets no
speedup, and the final project is timed on the course's held-out inputs, never the team's own.

The shortcut models are real ONNX files a student could write: the honest compressed model in
the ``else`` branch of an ``If`` whose ``then`` branch returns constants, keyed on the batch sizes
the grader times at, or on the team's own inputs being all zeros.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from grader import exitcodes
from grader.contracts.result import CheckStatus, Result
from tests.builders import check_of, submission
from tests.grading import grade

ROOT = Path(__file__).resolve().parent.parent
FINAL_SOLUTION = ROOT / "reference" / "solutions" / "final-project"


def _shortcut(source: Path, path: Path, condition: list[onnx.NodeProto], classes: int = 10) -> Path:
    """``source``'s graph behind ``If(cond)``: constant zeros when ``cond`` holds, the model otherwise.

    ``condition`` computes a boolean scalar named ``cond`` from the input ``input``.
    """
    model = onnx.load(str(source))
    graph = model.graph
    inner_out = graph.output[0].name
    answer = helper.make_tensor_value_info("answer", TensorProto.FLOAT, None)
    zeros = [
        helper.make_node("Shape", ["input"], ["in_shape"]),
        helper.make_node("Slice", ["in_shape", "zero1", "one1"], ["rows"]),
        helper.make_node("Concat", ["rows", "classes"], ["out_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["out_shape"], ["answer"], value=helper.make_tensor("v", 1, [1], [0.0])),
    ]
    then_branch = helper.make_graph(zeros, "shortcut", [], [answer])
    real = [*graph.node, helper.make_node("Identity", [inner_out], ["answer"])]
    else_branch = helper.make_graph(real, "model", [], [answer])
    constants = [
        numpy_helper.from_array(np.array([0], np.int64), "zero1"),
        numpy_helper.from_array(np.array([1], np.int64), "one1"),
        numpy_helper.from_array(np.array([classes], np.int64), "classes"),
    ]
    nodes = [
        *condition,
        helper.make_node("If", ["cond"], [inner_out], then_branch=then_branch, else_branch=else_branch),
    ]
    outer = helper.make_graph(
        nodes, "shortcut_model", list(graph.input), list(graph.output), [*graph.initializer, *constants]
    )
    wrapped = helper.make_model(outer, opset_imports=model.opset_import, ir_version=model.ir_version)
    onnx.checker.check_model(wrapped)
    onnx.save(wrapped, str(path))
    return path


def _batch_is(*sizes: int) -> list[onnx.NodeProto]:
    """``cond``: the batch is one of two ``sizes`` (the sizes the grader times at, the fidelity batch is not)."""

    def constant(name: str, value: int) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, np.int64)))

    first, second = sizes
    return [
        constant("zero0", 0),
        constant("first", first),
        constant("second", second),
        helper.make_node("Shape", ["input"], ["s"]),
        helper.make_node("Gather", ["s", "zero0"], ["batch"], axis=0),
        helper.make_node("Equal", ["batch", "first"], ["is_first"]),
        helper.make_node("Equal", ["batch", "second"], ["is_second"]),
        helper.make_node("Or", ["is_first", "is_second"], ["cond"]),
    ]


def _all_zero_input() -> list[onnx.NodeProto]:
    """``cond``: every input value is zero (the team's own inputs.npz is all zeros)."""
    return [
        helper.make_node("Abs", ["input"], ["magnitude"]),
        helper.make_node("ReduceSum", ["magnitude"], ["total"], keepdims=0),
        helper.make_node("Constant", [], ["nothing"], value=numpy_helper.from_array(np.array(0.0, np.float32))),
        helper.make_node("Equal", ["total", "nothing"], ["cond"]),
    ]


def _graded(folder: Path, root: Path) -> Result:
    grading = grade(folder, root)
    assert grading.exit_code == exitcodes.GRADED, grading.result.problems
    return grading.result


def test_a_model_that_takes_a_shortcut_at_the_timed_batch_sizes_gets_no_speedup(
    tiny_models, fast_root: Path, tmp_path: Path
) -> None:
    with np.load(tiny_models["inputs"]) as data:
        rows = {k: data[k][:128] for k in data.files}  # one fidelity batch of 128: never a timed size
    np.savez(tmp_path / "inputs.npz", **rows)
    cheat = _shortcut(tiny_models["correct"], tmp_path / "cheat.onnx", _batch_is(1, 16))
    folder = submission(
        tmp_path / "sub", {"baseline": tiny_models["baseline"], "candidate": cheat}, tmp_path / "inputs.npz"
    )
    result = _graded(folder, fast_root)
    assert check_of(result, "fidelity").status is CheckStatus.PASS  # untimed, it is the honest model
    speedup = result.metrics["candidate_vs_baseline.speedup_b16"]
    assert speedup.value is None and "answered differently" in speedup.note
    check = check_of(result, "speedup")
    assert check.status is not CheckStatus.PASS and check.points == 0
    assert "answered differently" in check.message
    assert any("while timed, 'candidate'" in flag for flag in result.flags)
    assert not any("'baseline'" in flag and "while timed" in flag for flag in result.flags)


def test_an_honest_model_timed_on_fresh_batches_keeps_its_speedup(tiny_models, fast_root: Path, tmp_path: Path) -> None:
    folder = submission(
        tmp_path / "sub",
        {"baseline": tiny_models["baseline"], "candidate": tiny_models["correct"]},
        tiny_models["inputs"],
    )
    result = _graded(folder, fast_root)
    assert result.metrics["candidate_vs_baseline.speedup_b16"].value is not None
    assert not any("while timed" in flag for flag in result.flags)


@pytest.fixture(scope="module")
def zero_keyed_entry(reference_paths, fast_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Result:
    """The staff entry behind a shortcut on all-zero inputs, submitted with an all-zero inputs.npz."""
    folder = tmp_path_factory.mktemp("final") / "entry"
    shutil.copytree(FINAL_SOLUTION, folder)
    _shortcut(FINAL_SOLUTION / "candidate.onnx", folder / "candidate.onnx", _all_zero_input())
    with np.load(FINAL_SOLUTION / "inputs.npz") as data:
        np.savez(folder / "inputs.npz", input=np.zeros_like(data["input"]), labels=data["labels"])
    manifest = yaml.safe_load((folder / "submission.yaml").read_text())
    (folder / "submission.yaml").write_text(yaml.safe_dump({**manifest, "team": "shortcut"}))
    return _graded(folder, fast_root)


def test_the_final_project_is_timed_on_the_held_out_inputs_not_the_teams_own(zero_keyed_entry: Result) -> None:
    speedup = zero_keyed_entry.metrics["candidate_vs_reference.speedup_b64"].value
    # the staff entry's own speedup is a few x; the shortcut on the team's zeros read 866x
    assert speedup is not None and speedup < 30, speedup
    assert not any("while timed" in flag for flag in zero_keyed_entry.flags)


def test_control_flow_in_a_final_entry_is_flagged_for_staff(zero_keyed_entry: Result) -> None:
    assert any("'candidate': the graph has a If" in flag for flag in zero_keyed_entry.flags), zero_keyed_entry.flags


def test_a_frozen_batch_axis_costs_the_speedup_and_says_how_to_fix_it(
    tiny_models, fast_root: Path, tmp_path: Path
) -> None:
    from tests.builders import export_fixed_batch, trained_tiny

    frozen = export_fixed_batch(trained_tiny(), tmp_path / "frozen.onnx", batch=1)
    folder = submission(
        tmp_path / "sub", {"baseline": tiny_models["baseline"], "candidate": frozen}, tiny_models["inputs"]
    )
    result = _graded(folder, fast_root)
    speedup = check_of(result, "speedup")
    assert speedup.status is CheckStatus.FAIL and speedup.points == 0
    assert "fixes the batch size of 'candidate' to 1" in speedup.message
    assert "dynamic" in speedup.message


def test_a_frozen_final_entry_says_why_it_has_no_score(reference_paths, fast_root: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from reference.digits_cnn import DigitsCNN
    from tests.builders import export_fixed_batch

    model = DigitsCNN()
    model.load_state_dict(load_file(str(reference_paths["model_safetensors"])))
    folder = tmp_path / "entry"
    shutil.copytree(FINAL_SOLUTION, folder)
    export_fixed_batch(model.eval(), folder / "candidate.onnx", batch=1)
    result = _graded(folder, fast_root)
    score = check_of(result, "score")
    assert score.status is not CheckStatus.PASS and score.points == 0
    assert "fixes the batch size of 'candidate' to 1" in score.message, score.message


def test_the_terminal_summary_shows_what_is_flagged_for_staff(zero_keyed_entry: Result) -> None:
    from io import StringIO

    from rich.console import Console

    from grader.report.terminal import print_summary

    out = StringIO()
    print_summary(zero_keyed_entry, {}, Console(file=out, width=200, color_system=None))
    assert "flagged for staff: 'candidate': the graph has a If" in out.getvalue()
