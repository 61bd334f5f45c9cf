"""End to end: real models through the real sandbox, each flawed submission failing the right check."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from grader import exitcodes
from grader.contracts.result import CheckStatus, Result
from grader.report.render import render_markdown
from tests import builders
from tests.grading import grade


def check(result: Result, check_id: str):
    return next(c for c in result.checks if c.id == check_id)


@pytest.fixture(scope="module")
def graded(tiny_models: dict[str, Path], fast_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Grade one submission per flaw once; tests then read the results."""
    cache: dict[str, tuple[Result, int]] = {}

    def run(name: str, candidate: str, **manifest) -> tuple[Result, int]:
        if name not in cache:
            folder = builders.submission(
                tmp_path_factory.mktemp(name),
                {"baseline": tiny_models["baseline"], "candidate": tiny_models[candidate]},
                tiny_models["inputs"],
                **manifest,
            )
            grading = grade(folder, fast_root)
            cache[name] = (grading.result, grading.exit_code)
        return cache[name]

    return run


def test_correct_tiny_submission_gets_full_marks_except_maybe_speed(graded) -> None:
    result, code = graded("correct", "correct", claims={"quantization": "int8", "sparsity": 0.6})
    assert code == exitcodes.GRADED and result.status == "graded"
    for check_id in ("loads", "quantized", "pruned", "fidelity", "size"):
        assert check(result, check_id).status is CheckStatus.PASS, check(result, check_id).message
    assert result.metrics["candidate_vs_baseline.effective_sparsity"].value >= 0.59
    # the inputs are the samples both models are confident on (builders.confident_inputs): exact on any CPU
    assert result.metrics["candidate_vs_baseline.top1_agreement"].value == 1.0
    assert result.metrics["candidate_vs_baseline.accuracy_drop_pts"].value == 0.0


def test_fake_qdq_fails_quantized(graded) -> None:
    result, _ = graded("fake_qdq", "fake_qdq", claims={"quantization": "int8", "sparsity": 0.6})
    quantized = check(result, "quantized")
    assert quantized.status is CheckStatus.FAIL
    assert "fake quantization" in quantized.message
    assert check(result, "size").status is not CheckStatus.PASS  # float weights: the file did not shrink


def test_tiny_values_instead_of_zeros_fail_pruned(graded) -> None:
    result, _ = graded("tiny", "tiny_not_zero", claims={"quantization": "int8", "sparsity": 0.6})
    pruned = check(result, "pruned")
    assert pruned.status is CheckStatus.FAIL
    assert "tiny but not exactly zero" in pruned.message
    assert pruned.evidence["near_zero_fraction"] > 0.5


def test_overclaimed_sparsity_fails_pruned(graded) -> None:
    result, _ = graded("pruned30", "pruned30", claims={"quantization": "int8", "sparsity": 0.5})
    pruned = check(result, "pruned")
    assert pruned.status in (CheckStatus.FAIL, CheckStatus.PARTIAL)
    assert pruned.points < pruned.max_points / 2
    assert "You claimed 50%" in pruned.message
    assert 0.28 <= pruned.evidence["effective_sparsity"] <= 0.32


def test_destroyed_accuracy_fails_fidelity(graded) -> None:
    result, _ = graded("destroyed", "destroyed", claims={"quantization": "int8", "sparsity": 0.6})
    fidelity = check(result, "fidelity")
    assert fidelity.status is CheckStatus.FAIL
    assert "agreement" in fidelity.message
    assert check(result, "quantized").status is CheckStatus.PASS  # the flaw is accuracy, nothing else


def _rejected(folder: Path, root: Path) -> tuple[Result, int, str]:
    grading = grade(folder, root)
    return grading.result, grading.exit_code, render_markdown(grading.result)


def test_missing_file_is_rejected_with_a_fix(tiny_models, fast_root, tmp_path: Path) -> None:
    folder = builders.submission(
        tmp_path / "s",
        {"baseline": tiny_models["baseline"]},
        tiny_models["inputs"],
        models={"baseline": "baseline.onnx", "candidate": "compresed.onnx"},
    )
    result, code, report = _rejected(folder, fast_root)
    assert code == exitcodes.REJECTED and result.status == "rejected"
    assert result.problems[0].kind == "missing"
    assert "compresed.onnx" in result.problems[0].message and "git add" in result.problems[0].hint
    assert all(c.status is CheckStatus.SKIPPED for c in result.checks)
    assert "What to fix" in report
    assert report.count("compresed.onnx") == 1  # said once, under What to fix, not in every check row
    assert "<summary>Evidence</summary>" not in report and "unknown CPU" not in report  # nothing ran


def test_path_outside_the_folder_is_rejected(tiny_models, fast_root, tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(tiny_models["correct"].read_bytes())
    folder = builders.submission(
        tmp_path / "team" / "hw",
        {"baseline": tiny_models["baseline"]},
        tiny_models["inputs"],
        models={"baseline": "baseline.onnx", "candidate": "../../outside.onnx"},
    )
    result, code, _ = _rejected(folder, fast_root)
    assert code == exitcodes.REJECTED
    assert result.problems[0].kind == "path" and "leaves the submission folder" in result.problems[0].message


class Payload:
    """Unpickling this creates a file: proof that a pickle was (or was not) executed."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_is_refused_and_its_payload_never_runs(tiny_models, fast_root, tmp_path: Path) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    payload = Payload()
    payload.marker = marker
    folder = builders.submission(
        tmp_path / "s",
        {"baseline": tiny_models["baseline"]},
        tiny_models["inputs"],
        models={"baseline": "baseline.onnx", "candidate": "model.pt"},
    )
    (folder / "model.pt").write_bytes(pickle.dumps(payload, protocol=4))
    result, code, _ = _rejected(folder, fast_root)
    assert code == exitcodes.REJECTED and result.problems[0].kind == "pickle"
    assert "ONNX" in result.problems[0].hint
    assert not marker.exists(), "the pickle's payload ran"


def test_git_lfs_pointer_is_recognised(tiny_models, fast_root, tmp_path: Path) -> None:
    folder = builders.submission(
        tmp_path / "s",
        {"baseline": tiny_models["baseline"]},
        tiny_models["inputs"],
        models={"baseline": "baseline.onnx", "candidate": "compressed.onnx"},
    )
    (folder / "compressed.onnx").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 123456\n"
    )
    result, code, _ = _rejected(folder, fast_root)
    assert code == exitcodes.REJECTED and result.problems[0].kind == "lfs"
    assert "git lfs pull" in result.problems[0].hint


def test_broken_manifest_names_every_bad_field(fast_root, tmp_path: Path) -> None:
    folder = tmp_path / "submissions" / "Team_A" / "hw2"
    folder.mkdir(parents=True)
    (folder / "submission.yaml").write_text(
        "schema: 1\nassignment: hw2-quantization-pruning\nteam: Team_A\n"
        "members: [octocat]\nmodel: {candidate: x.onnx}\n"
    )
    result, code, report = _rejected(folder, fast_root)
    assert code == exitcodes.REJECTED
    fields = {p.field for p in result.problems}
    assert {"team", "model"} <= fields  # the typo is named, so the fix is obvious
    assert result.submission.team == "team-a"  # derived from the folder, sanitised
    assert "unknown field" in report


def test_model_that_hangs_hits_the_time_limit(tiny_models, tmp_path: Path) -> None:
    root = builders.fast_assignments(tmp_path / "assignments", wall_time_s=8)
    folder = builders.submission(
        tmp_path / "s",
        {"baseline": tiny_models["baseline"], "candidate": builders.hanging_model(tmp_path / "hang.onnx")},
        tiny_models["inputs"],
    )
    result, code, report = _rejected(folder, root)
    assert code == exitcodes.REJECTED and result.problems[0].kind == "time_limit"
    assert check(result, "loads").status is CheckStatus.FAIL
    assert "8 s limit" in report


def test_model_that_needs_too_much_memory_hits_the_memory_limit(tiny_models, tmp_path: Path) -> None:
    root = builders.fast_assignments(tmp_path / "assignments", memory_mb=1024)
    folder = builders.submission(
        tmp_path / "s",
        {"baseline": tiny_models["baseline"], "candidate": builders.memory_hog_model(tmp_path / "hog.onnx")},
        tiny_models["inputs"],
    )
    result, code, _ = _rejected(folder, root)
    assert code == exitcodes.REJECTED and result.problems[0].kind == "memory_limit"
    assert "memory" in check(result, "loads").message


def test_a_different_smaller_network_is_not_credited_as_pruned(tiny_models, fast_root, tmp_path: Path) -> None:
    from tests.test_evidence import _Mlp

    mlp = builders.quantize(
        builders.export(builders.train(_Mlp(), 4), tmp_path / "mlp-fp32.onnx"), tmp_path / "mlp.onnx"
    )
    folder = builders.submission(
        tmp_path / "sub", {"baseline": tiny_models["baseline"], "candidate": mlp}, tiny_models["inputs"]
    )
    result = grade(folder, fast_root).result
    pruned = builders.check_of(result, "pruned")
    assert pruned.points == 0, pruned.message  # 90% fewer weights, none of them removed from the baseline
    assert "Removed channels are not credited" in pruned.message and "not the baseline's" in pruned.message


def test_a_grading_says_what_it_is_doing_and_check_stays_quiet_off_a_terminal(
    tiny_models, fast_root, tmp_path: Path, capsys
) -> None:
    from grader.commands.check import progress_shown
    from grader.grading import pipeline
    from tests.grading import local_sandboxes

    folder = builders.submission(
        tmp_path / "sub",
        {"baseline": tiny_models["baseline"], "candidate": tiny_models["correct"]},
        tiny_models["inputs"],
    )
    heard: list[str] = []
    grading = pipeline.grade(folder, local_sandboxes(), fast_root, progress=heard.append)
    assert grading.exit_code == exitcodes.GRADED
    assert [h.split()[0] for h in heard] == ["reading", "checking", "running", "scoring"]
    with progress_shown(False) as progress:
        progress("running the models")
    assert capsys.readouterr() == ("", "")  # a CI log hears nothing
