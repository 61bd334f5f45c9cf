"""Every pinned file of every image variant resolves against the package registry, for the
platform and Python it is installed on (not this machine's): binary wheels only, as the
Dockerfile installs them. A pin that does not exist for that platform (an onnxruntime-gpu release
that never shipped, a package whose PyPI release is only a stub sdist) fails here, not in a
course admin's first image build.

This reaches PyPI (``.ci/run`` does). A file that names another index (PyTorch's CPU wheels,
NVIDIA's TensorRT libraries) is resolved there too where that index answers; where it does not,
the lines that only it serves (``+cpu`` builds, lines marked ``# index-only``) are left out and
the test says so: every other line still resolves from PyPI. Off-line and outside CI, it skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPI = "https://pypi.org/simple/"
CERT = Path("/etc/ssl/certs/ca-certificates.crt")
# pip takes --platform literally: a manylinux_2_28 machine also installs every older manylinux wheel
MANYLINUX_X86_64 = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1)] + ["manylinux2014_x86_64"]

# (pinned file, the Python that installs it: the image's 3.11, the hosted runners' 3.12)
PINNED = [
    ("docker/requirements-cpu.txt", "3.11"),
    ("docker/requirements-gpu.txt", "3.11"),
    ("docker/requirements-tensorrt.txt", "3.11"),
    (".github/grader-ci-requirements.txt", "3.12"),
]


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500  # an index that answers at all (a 404 for the bare root is an answer)
    except (urllib.error.URLError, OSError):
        return False


def index_only(line: str) -> bool:
    return "+cpu" in line.split("#")[0] or "# index-only" in line


def resolvable_lines(path: Path) -> tuple[list[str], list[str]]:
    """The file's lines to resolve here and the pins left out because their own index does not answer."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    indexes = [line.split()[1] for line in lines if line.startswith("--extra-index-url")]
    down = [url for url in indexes if not reachable(url.rstrip("/") + "/")]
    if not down:
        return lines, []
    kept = [line for line in lines if not (line.startswith("--extra-index-url") and line.split()[1] in down)]
    left = [line.split("#")[0].strip() for line in kept if index_only(line)]
    return [line for line in kept if not index_only(line)], [f"{p} (index {', '.join(down)} unreachable)" for p in left]


@pytest.fixture(scope="module")
def registry() -> None:
    if not reachable(PYPI):
        if os.environ.get("CI"):
            pytest.fail(f"CI must reach {PYPI} to check that the images' pins exist")
        pytest.skip(f"{PYPI} is not reachable from this machine")


@pytest.mark.parametrize(("pinned", "python"), PINNED, ids=[p for p, _ in PINNED])
def test_every_pin_resolves_for_its_platform_from_the_registry(
    registry: None, pinned: str, python: str, tmp_path: Path
) -> None:
    lines, left_out = resolvable_lines(ROOT / pinned)
    assert any("==" in line for line in lines), f"{pinned} has nothing to resolve"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(lines) + "\n")
    platforms = [arg for tag in MANYLINUX_X86_64 for arg in ("--platform", tag)]
    command = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--quiet", "--ignore-installed"]
    command += ["--no-deps", "--only-binary=:all:", *platforms, "--python-version", python, "--implementation", "cp"]
    command += ["--target", str(tmp_path / "target"), "--report", str(tmp_path / "report.json")]
    command += ["--index-url", PYPI, "-r", str(requirements)]
    if CERT.is_file():
        command += ["--cert", str(CERT)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{pinned} does not resolve for Python {python} on manylinux x86-64:\n{done.stderr}"
    chosen = {
        item["metadata"]["name"].lower() for item in json.loads((tmp_path / "report.json").read_text())["install"]
    }
    wanted = {line.split("==")[0].split("[")[0].strip().lower() for line in lines if "==" in line}
    assert {w.replace("_", "-") for w in wanted} <= {c.replace("_", "-") for c in chosen}
    assert all(
        item["download_info"]["url"].endswith(".whl")
        for item in json.loads((tmp_path / "report.json").read_text())["install"]
    )
    if left_out:
        warnings.warn(f"{pinned}: not resolved here: {'; '.join(left_out)}", stacklevel=1)
