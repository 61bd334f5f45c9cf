"""Shared fixtures: the reference models (built by the shipped script), small test models, a loopback listener."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import builders


@pytest.fixture(scope="session")
def reference_paths() -> dict[str, Path]:
    """The course reference models and the hw2 reference solution, built if missing."""
    from reference.build import ensure_built

    return ensure_built()


@pytest.fixture(scope="session")
def fast_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped assignments with a short timing budget."""
    return builders.fast_assignments(tmp_path_factory.mktemp("assignments"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One trained tiny model in every variant the pipeline tests need, built once."""
    import torch

    folder = tmp_path_factory.mktemp("tiny")
    model = builders.trained_tiny()
    paths = {"baseline": builders.export(model, folder / "baseline.onnx")}

    def pruned_quantized(amount: float, name: str, source: torch.nn.Module | None = None) -> Path:
        pruned = builders.prune_to(builders.copy_of(source or model), amount)
        fp32 = builders.export(pruned, folder / f"{name}-fp32.onnx")
        return builders.quantize(fp32, folder / f"{name}.onnx")

    paths["correct"] = pruned_quantized(0.6, "correct")
    paths["pruned30"] = pruned_quantized(0.3, "pruned30")
    # never trained (no fine-tune either): agrees with the baseline about as often as chance does
    destroyed = builders.prune_to(builders.TinyCNN(), 0.6, finetune_epochs=0)
    paths["destroyed"] = builders.quantize(
        builders.export(destroyed, folder / "destroyed-fp32.onnx"), folder / "destroyed.onnx"
    )
    from reference.compress import fake_quantize_onnx

    fp32_pruned = folder / "correct-fp32.onnx"
    paths["fake_qdq"] = fake_quantize_onnx(fp32_pruned, folder / "fake_qdq.onnx")
    paths["tiny_not_zero"] = builders.export(
        builders.tiny_instead_of_zero(builders.copy_of(model), 0.6), folder / "tiny_not_zero.onnx"
    )
    # the correct recipe agrees with its baseline on every one of these samples, with a margin
    paths["inputs"] = builders.confident_inputs(folder / "inputs.npz", [paths["baseline"], paths["correct"]])
    return paths


@pytest.fixture(scope="session")
def docker_client():
    """A real Docker engine (``$DOCKER_HOST``), or the test skips saying why there is none."""
    from tests.docker_host import engine_or_reason

    client, reason = engine_or_reason()
    if client is None:
        pytest.skip(reason)
    return client


@pytest.fixture(scope="session")
def docker_settings(docker_client):
    """The production runner's settings with a registry-free test image of this checkout."""
    from tests import docker_host

    return docker_host.settings(docker_client)


from tests.fakegithub import fake_github  # noqa: E402,F401  (the fake GitHub API fixture, reusable by any test)


@pytest.fixture
def listener():
    """A real TCP server on the host's loopback, which a sandboxed child or container must not reach.

    Yields (port, accepted): ``accepted`` gains an entry if anything connected within 20 s.
    """
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted: list[bool] = []

    def accept() -> None:
        server.settimeout(20)
        try:
            server.accept()
            accepted.append(True)
        except OSError:
            pass

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


@pytest.fixture(scope="session")
def service_root(reference_paths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped assignments, final-service with a short load test (same checks and thresholds)."""
    from tests.services import short_load_test_assignments

    return short_load_test_assignments(tmp_path_factory.mktemp("assignments"))
