"""submission.yaml validation: strict, bounded, and every error names its field and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.errors import SubmissionError
from grader.intake.manifest import load_manifest, parse_manifest

VALID = """\
schema: 1
assignment: hw2-quantization-pruning
team: team-alpha
members: [octocat]
models:
  baseline: baseline.onnx
  candidate: {path: compressed.safetensors, architecture: digits-cnn}
data:
  inputs: inputs.npz
claims: {quantization: int8, sparsity: 0.5}
reported: {}
notes: ""
"""


def test_valid_manifest_parses_with_shorthand_paths() -> None:
    sub = parse_manifest(VALID)
    assert sub.team == "team-alpha" and sub.members == ["octocat"]
    assert sub.models["baseline"].path == "baseline.onnx" and sub.models["baseline"].architecture is None
    assert sub.models["candidate"].architecture == "digits-cnn"
    assert sub.claims == {"quantization": "int8", "sparsity": 0.5}


def _problems(text: str) -> dict[str, str]:
    with pytest.raises(SubmissionError) as info:
        parse_manifest(text)
    return {p.field: p.message for p in info.value.problems}


def test_every_bad_field_is_named_at_once() -> None:
    text = VALID.replace("team: team-alpha", "team: Team Alpha!").replace("members: [octocat]", "members: []")
    text = text.replace("notes:", "nots:")
    problems = _problems(text)
    assert set(problems) == {"team", "members", "nots"}
    assert "lowercase" in problems["team"]
    assert "unknown field 'nots'" in problems["nots"]


def test_missing_required_fields_and_wrong_schema() -> None:
    problems = _problems("schema: 2\nassignment: hw2\nmembers: [x]\n")
    assert "team" in problems and "missing required field" in problems["team"]
    assert "schema" in problems


def test_invalid_yaml_reports_the_line() -> None:
    with pytest.raises(SubmissionError) as info:
        parse_manifest("schema: 1\nteam: [unclosed\nmembers: x\n")
    assert "line" in info.value.message


@pytest.mark.parametrize("text", ["just a string", "- a\n- list", ""])
def test_non_mapping_is_refused(text: str) -> None:
    with pytest.raises(SubmissionError):
        parse_manifest(text)


def test_notes_and_claims_are_bounded() -> None:
    problems = _problems(VALID.replace('notes: ""', "notes: " + "x" * 3000))
    assert "notes" in problems


def test_manifest_file_must_exist_and_not_be_a_link(tmp_path: Path) -> None:
    with pytest.raises(SubmissionError, match="no submission.yaml"):
        load_manifest(tmp_path)
    real = tmp_path / "elsewhere.yaml"
    real.write_text(VALID)
    (tmp_path / "submission.yaml").symlink_to(real)
    with pytest.raises(SubmissionError, match="symbolic link"):
        load_manifest(tmp_path)


def test_a_key_written_one_level_too_high_says_where_it_belongs() -> None:
    """A student who forgot to indent 'candidate:' under 'models:' is told exactly that."""
    text = VALID.replace("  candidate: {path: compressed.safetensors, architecture: digits-cnn}\n", "")
    text += "candidate: compressed.onnx\ninputs: inputs.npz\n"
    problems = _problems(text.replace("data:\n  inputs: inputs.npz\n", ""))
    assert "'candidate' belongs under 'models:'" in problems["candidate"]
    assert "'inputs' belongs under 'data:'" in problems["inputs"]
    assert "check its spelling" in _problems(VALID.replace("notes:", "nots:"))["nots"]


def test_a_manifest_saved_as_submission_yml_is_named_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "submission.yml").write_text(VALID)
    with pytest.raises(SubmissionError) as info:
        load_manifest(tmp_path)
    assert "there is 'submission.yml'" in info.value.problems[0].message
    assert "git mv submission.yml submission.yaml" in info.value.problems[0].hint
