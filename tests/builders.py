"""Small models and submissions built by the tests themselves (no downloads, a few seconds each).

The compression recipes come from ``reference.compress`` (the same ones the staff solution uses),
so a test that feeds the grader a flawed model differs from the correct one in exactly the flaw.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from reference import compress
from reference.digits_cnn import load_digits_split

HW2 = "hw2-quantization-pruning"


class TinyCNN(nn.Module):
    """A digits-shaped model small enough to export and quantize in about a second."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.head(torch.flatten(x, 1))


def digits(limit: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, y_train, x_test, y_test = load_digits_split()
    return x_train, y_train, x_test[:limit], y_test[:limit]


def trained_tiny(seed: int = 0, epochs: int = 4) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN()
    x, y, _, _ = digits()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[i : i + 64]), yt[i : i + 64]).backward()
            opt.step()
    return model.eval()


def export(model: nn.Module, path: Path) -> Path:
    return compress.export_onnx(model, path, torch.zeros(1, 1, 8, 8))


def prune_to(model: nn.Module, amount: float) -> nn.Module:
    compress.prune_global_magnitude(model, amount)
    return model


def quantize(src: Path, dst: Path, fmt: str = "qoperator") -> Path:
    _, _, x_test, _ = digits()
    return compress.quantize_onnx_int8(src, dst, x_test[:64], fmt=fmt)


def write_inputs(path: Path, with_labels: bool = True) -> Path:
    _, _, x_test, y_test = digits()
    arrays: dict[str, np.ndarray] = {"input": x_test}
    if with_labels:
        arrays["labels"] = y_test
    np.savez(path, **arrays)
    return path


def write_manifest(folder: Path, **overrides: Any) -> Path:
    manifest: dict[str, Any] = {
        "schema": 1,
        "assignment": HW2,
        "team": "team-alpha",
        "members": ["octocat"],
        "models": {"baseline": "baseline.onnx", "candidate": "compressed.onnx"},
        "data": {"inputs": "inputs.npz"},
        "claims": {"quantization": "int8", "sparsity": 0.5},
    }
    manifest.update(overrides)
    path = folder / "submission.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def fast_assignments(root: Path, **limits: Any) -> Path:
    """A copy of the real assignments with a short timing budget (and optional tighter limits).

    The checks, thresholds and rules are the shipped ones; only how long timing runs changes, so
    the tests exercise the same grading a student gets, in a fraction of the time.
    """
    source = Path(__file__).resolve().parent.parent / "assignments"
    shutil.copytree(source, root, dirs_exist_ok=True)
    path = root / HW2 / "assignment.yaml"
    config = yaml.safe_load(path.read_text())
    config["measure"]["timing"].update({"budget_s": 0.6, "warmup": 1, "min_rounds": 5, "batch_sizes": [1, 16]})
    config["limits"].update(limits)
    for check in config["checks"]:
        if check["id"] == "speedup":
            check["params"]["metric"] = "candidate_vs_baseline.speedup_b16"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return root
