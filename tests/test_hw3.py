"""hw3-clustering end to end: exact distinct values per tensor, float noise never merged to pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from grader.contracts.result import CheckStatus
from reference import compress
from tests import builders
from tests.builders import check_of
from tests.grading import grade

HW3 = "hw3-clustering"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("hw3")
    model = builders.trained_tiny(epochs=3)
    clustered = builders.copy_of(model)
    compress.cluster_weights(clustered, 16)
    noisy = builders.copy_of(clustered)
    partial = builders.copy_of(model)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for weight in compress.prunable_weights(noisy).values():
            scale = 1e-6 * float(weight.abs().max())  # far below any real difference between centroids
            weight.add_(torch.from_numpy(rng.normal(0, scale, tuple(weight.shape)).astype(np.float32)))
        for name, module in partial.named_modules():
            if name.startswith("conv"):  # clusters the convolutions, forgets the large Linear head
                centroids, index = compress.kmeans_1d(module.weight.numpy(), 16)
                module.weight.copy_(torch.from_numpy(centroids[index]))
    files = {
        "baseline": builders.export(model, folder / "baseline.onnx"),
        "clustered": builders.export(clustered, folder / "clustered.onnx"),
        "noisy": builders.export(noisy, folder / "noisy.onnx"),
        "partial": builders.export(partial, folder / "partial.onnx"),
    }
    # the samples where clustering (and its noisy copy) keeps the baseline's answer with a margin
    files["inputs"] = builders.confident_inputs(
        folder / "inputs.npz", [files["baseline"], files["clustered"], files["noisy"]]
    )
    return files


@pytest.fixture(scope="module")
def graded(files, fast_root: Path, tmp_path_factory: pytest.TempPathFactory):
    cache: dict[tuple, object] = {}

    def run(candidate: str, clusters: object = 16):
        key = (candidate, repr(clusters))
        if key not in cache:
            claims = {} if clusters is None else {"clusters": clusters}
            folder = builders.submission(
                tmp_path_factory.mktemp(candidate),
                {"baseline": files["baseline"], "candidate": files[candidate]},
                files["inputs"],
                assignment=HW3,
                claims=claims,
            )
            cache[key] = grade(folder, fast_root).result
        return cache[key]

    return run


def test_exactly_clustered_weights_pass_every_check(graded) -> None:
    result = graded("clustered")
    assert result.score == result.max_score == 100, [c.message for c in result.checks]
    clustered = check_of(result, "clustered")
    assert clustered.evidence["covered_fraction"] > 0.98 and "at most 16 distinct values" in clustered.message
    assert result.metrics["candidate_vs_baseline.palettized_ratio"].value > 6


def test_float_noise_around_the_centroids_fails_and_the_message_says_so(graded) -> None:
    result = graded("noisy")
    clustered = check_of(result, "clustered")
    assert clustered.status is CheckStatus.FAIL
    assert "float noise" in clustered.message and "only 16 once differences" in clustered.message
    assert all(t["distinct"] > 16 for t in clustered.evidence["tensors"])  # counted exactly, never merged
    assert check_of(result, "fidelity").status is CheckStatus.PASS  # the outputs barely change: not the flaw


def test_claiming_fewer_clusters_than_stored_fails(graded) -> None:
    clustered = check_of(graded("clustered", clusters=8), "clustered")
    assert clustered.status is CheckStatus.FAIL and "more than the claimed 8" in clustered.message


def test_an_unclustered_layer_is_named(graded) -> None:
    clustered = check_of(graded("partial"), "clustered")
    assert clustered.status is CheckStatus.FAIL
    assert "head.weight" in clustered.message and "conv2.weight" not in clustered.message
    assert 0 < clustered.evidence["compliant_fraction"] < 0.5


@pytest.mark.parametrize(
    "claim, message", [(None, "claims: {clusters: 16}"), (64, "at most 32"), ("sixteen", "an integer from 2 to 32")]
)
def test_a_missing_or_impossible_claim_says_how_to_claim(graded, claim, message: str) -> None:
    clustered = check_of(graded("clustered", clusters=claim), "clustered")
    assert clustered.status is CheckStatus.FAIL and message in clustered.message
