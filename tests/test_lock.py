"""requirements.lock is what the suite runs with: it agrees with pyproject.toml, it is what this
environment holds, the images' pins agree with it, and nothing the code imports is missing from it
(a test that needs a package only a developer's machine has fails here, not on a fresh machine)."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
SOURCES = ["grader", "tests", "reference", "benchmarks", "scripts", "assignments", "docker"]
LOCAL = {"grader", "tests", "reference", "benchmarks", "scripts"}
OPTIONAL = {
    "tensorrt",
    "tensorrt_bindings",
    "pynvml",
}  # TensorRT, NVML (nvidia-ml-py): only where installed, in a guard


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith(("#", " ", "-")):
            name, version = line.split("==", 1)
            found[normal(name.split("[")[0])] = version.strip()
    return found


LOCKED = pins(LOCK)


def project_requirements() -> list[Requirement]:
    """The project's dependencies and its dev extra, with the extras the dev extra names itself."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras, wanted, seen = project["optional-dependencies"], ["dev"], set()
    found = [Requirement(spec) for spec in project["dependencies"]]
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for spec in extras[extra]:
            requirement = Requirement(spec)
            if normal(requirement.name) == "compression-grader":
                wanted.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


@pytest.mark.parametrize("requirement", project_requirements(), ids=str)
def test_the_lock_pins_every_dependency_within_its_range(requirement: Requirement) -> None:
    name = normal(requirement.name)
    assert name in LOCKED, f"{requirement} is not in requirements.lock: run ./run lock"
    assert requirement.specifier.contains(LOCKED[name], prereleases=True), f"{requirement} vs {LOCKED[name]}"


def test_this_environment_is_the_lock() -> None:
    """./run setup installs exactly the lock, so a stale or hand-made environment is noticed."""
    wrong = {}
    for name, version in LOCKED.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = (version, None)
            continue
        if installed.split("+")[0] != version.split("+")[0]:
            wrong[name] = (version, installed)
    assert not wrong, f"installed packages differ from requirements.lock (locked, installed): {wrong}"


@pytest.mark.parametrize(
    "pinned", ["docker/requirements-cpu.txt", "docker/requirements-gpu.txt", ".github/grader-ci-requirements.txt"]
)
def test_the_images_and_the_light_jobs_run_the_locked_versions(pinned: str) -> None:
    """One resolution: every package a variant shares with the lock is at the lock's version
    (torch and onnxruntime differ by design: CPU build, CUDA build, onnxruntime-gpu)."""
    variant = pins(ROOT / pinned)
    assert variant, f"{pinned} pins nothing"
    differ = {
        n: (v, LOCKED[n])
        for n, v in variant.items()
        if n in LOCKED and n not in {"torch", "onnxruntime"} and v != LOCKED[n]
    }
    assert not differ, f"{pinned} disagrees with requirements.lock: {differ}"


def third_party_imports() -> dict[str, set[str]]:
    """Top-level modules each source file imports that are neither the standard library nor ours."""
    found: dict[str, set[str]] = {}
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in LOCAL and top not in OPTIONAL:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_nothing_imported_is_missing_from_the_lock() -> None:
    providers = metadata.packages_distributions()
    missing = {}
    for module, files in sorted(third_party_imports().items()):
        distributions = {normal(d) for d in providers.get(module, [])}
        if not distributions & set(LOCKED):
            missing[module] = sorted(files)[:3]
    assert not missing, (
        f"imported but provided by no locked package (add it to pyproject.toml, then ./run lock): {missing}"
    )


def test_the_lock_is_found_wanting_when_it_should_be(tmp_path: Path) -> None:
    """The import check itself: a module no locked package provides is named."""
    providers = metadata.packages_distributions()
    assert not {normal(d) for d in providers.get("surely_not_a_module", [])} & set(LOCKED)
    assert {normal(d) for d in providers.get("yaml", [])} & set(LOCKED)  # PyYAML provides yaml
