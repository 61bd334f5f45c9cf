"""Student docs that work: every Python block in an assignment README runs as written on the
course's torch, and what it writes, submitted with the README's own manifest, passes.

The blocks are taken from the README files themselves, so a README that changes is the README
that is tested. Each block runs with the names the README says it expects: ``model`` (the
trained course model), ``x`` (its evaluation inputs as a tensor), ``y`` (their labels) and
``folder`` (the submission folder).
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


def test_the_export_assignment_has_a_recipe_to_run() -> None:
    assert blocks(ROOT / "assignments" / "hw6-export" / "README.md", "python")


@pytest.mark.parametrize("readme", [r for r in READMES if blocks(r, "python")], ids=lambda r: r.parent.name)
def test_a_readme_recipe_runs_and_what_it_writes_passes(readme: Path, reference_paths, fast_root, tmp_path) -> None:
    from safetensors.torch import load_file

    from reference.digits_cnn import DigitsCNN

    model = DigitsCNN()
    model.load_state_dict(load_file(str(reference_paths["model_safetensors"])))
    with np.load(reference_paths["eval_npz"]) as data:
        x, y = torch.from_numpy(data["input"][:200]), data["labels"][:200]
    folder = tmp_path / readme.parent.name
    folder.mkdir()
    names = {"model": model, "x": x, "y": y, "folder": folder}
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
