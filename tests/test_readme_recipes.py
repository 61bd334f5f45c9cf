"""Student docs that work: every Python block in an assignment README runs as written on the
course's torch, and what it writes, submitted with the README's own manifest, passes.

The blocks are taken from the README files themselves, so a README that changes is the README
that is tested. Each block runs with the names the README says it expects: ``model`` (the
trained course model), ``x`` (its evaluation inputs as a tensor), ``y`` (their labels),
``x_train`` / ``y_train`` (the training split, as tensors) and ``folder`` (the submission folder).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from grader import exitcodes
from grader.contracts.result import CheckStatus
from tests.grading import grade

ROOT = Path(__file__).resolve().parent.parent
READMES = sorted((ROOT / "assignments").glob("*/README.md"))
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
TIMED = {"ort_speedup", "speedup"}  # speed is a benchmark's business, not a unit test's


def blocks(readme: Path, language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(readme.read_text()) if lang == language]


@pytest.mark.parametrize("assignment", ["hw2-quantization-pruning", "hw6-export"])
def test_the_main_assignments_have_a_recipe_to_run(assignment: str) -> None:
    assert blocks(ROOT / "assignments" / assignment / "README.md", "python")


def test_every_assignment_folder_has_a_readme_with_a_manifest() -> None:
    folders = [p for p in (ROOT / "assignments").iterdir() if (p / "assignment.yaml").is_file()]
    assert len(folders) >= 8
    for folder in folders:
        readme = folder / "README.md"
        assert readme.is_file(), f"{folder.name} has no README"
        manifests = [b for b in blocks(readme, "yaml") if "assignment: " in b]
        assert any(f"assignment: {folder.name}" in b for b in manifests), f"{folder.name}'s README shows no manifest"


@pytest.mark.parametrize("readme", [r for r in READMES if blocks(r, "python")], ids=lambda r: r.parent.name)
def test_a_readme_recipe_runs_and_what_it_writes_passes(readme: Path, reference_paths, fast_root, tmp_path) -> None:
    from safetensors.torch import load_file

    from reference.digits_cnn import DigitsCNN

    model = DigitsCNN()
    model.load_state_dict(load_file(str(reference_paths["model_safetensors"])))
    from reference.digits_cnn import load_digits_split

    x_train, y_train, _, _ = load_digits_split()
    with np.load(reference_paths["eval_npz"]) as data:
        x, y = torch.from_numpy(data["input"][:200]), data["labels"][:200]
    folder = tmp_path / readme.parent.name
    folder.mkdir()
    names = {
        "model": model,
        "x": x,
        "y": y,
        "x_train": torch.from_numpy(x_train),
        "y_train": torch.from_numpy(y_train),
        "folder": folder,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for code in blocks(readme, "python"):
            exec(compile(code, str(readme), "exec"), names)  # noqa: S102 - the course's own README
    (manifest,) = blocks(readme, "yaml")
    (folder / "submission.yaml").write_text(manifest)
    grading = grade(folder, fast_root)
    assert grading.exit_code == exitcodes.GRADED, grading.result.problems
    for check in grading.result.checks:
        if check.id in TIMED:
            continue
        if check.pending:
            assert check.status is CheckStatus.SKIPPED  # needs a GPU this machine lacks
            continue
        assert check.status is CheckStatus.PASS, f"{check.id}: {check.message}"
