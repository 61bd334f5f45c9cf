"""Fidelity for every output kind: a regressor (output [N, 1] or [N]) is judged by the SNR of its
outputs against the baseline's, never by a top-1 agreement that is 1.0 whatever it outputs, and
never "nothing to judge".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from grader import exitcodes
from grader.contracts.result import CheckStatus, Result
from tests.builders import check_of, digits, export, quantize, submission
from tests.grading import grade


class Regressor(nn.Module):
    """A digits-image regressor: one value per sample, as [N, 1] or squeezed to [N]."""

    def __init__(self, squeeze: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1))
        self.squeeze = squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return y.squeeze(1) if self.squeeze else y


def _trained(squeeze: bool, seed: int, epochs: int) -> Regressor:
    """Fitted to predict the digit's value: outputs spread over 0..9, so SNR is meaningful."""
    torch.manual_seed(seed)
    model = Regressor(squeeze)
    x, y, _, _ = digits()
    x, y = torch.from_numpy(x), torch.from_numpy(y).float()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs * 20):
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(model(x).reshape(-1), y)
        loss.backward()
        optimiser.step()
    return model.eval()


def _grade(folder: Path, root: Path) -> Result:
    grading = grade(folder, root)
    assert grading.exit_code == exitcodes.GRADED, grading.result.problems
    return grading.result


@pytest.fixture(scope="module", params=[False, True], ids=["N-by-1", "N"])
def regressors(request, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("regressor")
    squeeze = request.param
    baseline = export(_trained(squeeze, seed=0, epochs=10), folder / "baseline.onnx")
    _, _, x_test, _ = digits()
    np.savez(folder / "inputs.npz", input=x_test)  # a regressor's inputs carry no class labels
    return {
        "baseline": baseline,
        "int8": quantize(baseline, folder / "int8.onnx"),
        "unrelated": export(_trained(squeeze, seed=1, epochs=0), folder / "unrelated.onnx"),
        "inputs": folder / "inputs.npz",
    }


def test_an_unrelated_regressor_fails_fidelity_by_its_snr(regressors, fast_root: Path, tmp_path: Path) -> None:
    files = {"baseline": regressors["baseline"], "candidate": regressors["unrelated"]}
    result = _grade(submission(tmp_path / "sub", files, regressors["inputs"]), fast_root)
    fidelity = check_of(result, "fidelity")
    assert fidelity.status is CheckStatus.FAIL and fidelity.points == 0, fidelity.message
    assert "SNR" in fidelity.message
    assert result.metrics["candidate_vs_baseline.snr_db"].value < 10  # an untrained net: ~0 dB


def test_an_int8_regressor_passes_fidelity_by_its_snr(regressors, fast_root: Path, tmp_path: Path) -> None:
    files = {"baseline": regressors["baseline"], "candidate": regressors["int8"]}
    result = _grade(submission(tmp_path / "sub", files, regressors["inputs"]), fast_root)
    fidelity = check_of(result, "fidelity")
    assert result.metrics["candidate_vs_baseline.snr_db"].value > 30  # int8 noise on this net: ~40 dB
    assert fidelity.status is CheckStatus.PASS and fidelity.points == fidelity.max_points, fidelity.message
    assert "nothing to judge" not in fidelity.message and "top-1" not in fidelity.message
