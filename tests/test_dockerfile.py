"""The grading image's Dockerfile, read with a real Dockerfile parser (no registry here to build it).

It must parse, pin every base by digest and every package by version, build both variants from
the same stages, and leave a final stage with an unprivileged user and nothing to compile or
fetch with; the build context must hold only what the Dockerfile copies.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

dockerfile_parse = pytest.importorskip("dockerfile_parse", reason="dockerfile-parse is in the dev extra")
tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")

ROOT = Path(__file__).resolve().parent.parent
DIGEST_PINNED = re.compile(r"^[a-z0-9./_-]+:[A-Za-z0-9._-]+@sha256:[0-9a-f]{64}$")
FORBIDDEN_IN_FINAL = re.compile(
    r"\b(gcc|g\+\+|clang|make|build-essential|curl|wget|git|netcat|ncat|ssh|"
    r"apt-get install|pip install)\b"
)


@pytest.fixture(scope="module")
def parsed():
    parser = dockerfile_parse.DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser


def global_args(parsed) -> dict[str, str]:
    """ARGs declared before the first FROM, with their defaults."""
    found = {}
    for instruction in parsed.structure:
        if instruction["instruction"] == "FROM":
            break
        if instruction["instruction"] == "ARG":
            name, _, default = instruction["value"].partition("=")
            found[name] = default
    return found


def stages(parsed) -> list[tuple[str, str, list[dict]]]:
    """(base, stage name, instructions) for every FROM, bases with global ARGs left unexpanded."""
    found: list[tuple[str, str, list[dict]]] = []
    for instruction in parsed.structure:
        if instruction["instruction"] == "FROM":
            base, _, name = instruction["value"].partition(" AS ")
            found.append((base.strip(), name.strip(), []))
        elif found:
            found[-1][2].append(instruction)
    return found


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_every_base_is_pinned_by_digest_or_an_earlier_stage(parsed, variant: str) -> None:
    args = {**global_args(parsed), "VARIANT": variant}
    names: set[str] = set()
    for base, name, _ in stages(parsed):
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert resolved in names or DIGEST_PINNED.match(resolved), f"stage {name}: base '{resolved}' is not pinned"
        names.add(name)
    assert {"python-cpu", "python-gpu", "runtime", "build", "final"} <= names


def test_final_stage_is_unprivileged_and_has_no_tools(parsed) -> None:
    base, name, instructions = stages(parsed)[-1]
    assert name == "final" and base == "runtime"
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for run in (i["value"] for i in instructions if i["instruction"] == "RUN"):
        assert not FORBIDDEN_IN_FINAL.search(run), run
        assert "pip uninstall" in run  # the base image's pip goes too
    entrypoint = [i["value"] for i in instructions if i["instruction"] == "ENTRYPOINT"]
    assert entrypoint == ['["python", "-m", "grader.worker"]']
    copies = [i["value"] for i in instructions if i["instruction"] == "COPY"]
    assert copies == ["--from=build /opt/grader /opt/grader"]


def test_build_installs_only_pinned_binary_wheels_and_drops_pip(parsed) -> None:
    _, _, instructions = next(s for s in stages(parsed) if s[1] == "build")
    runs = " ".join(i["value"] for i in instructions if i["instruction"] == "RUN")
    installs = re.findall(r"pip install ([^;&]*)", runs)
    assert installs
    for args in installs:
        assert "--no-cache-dir" in args
        assert "-r " in args or "--no-deps" in args, f"unpinned install: {args}"
        if "-r " in args:
            assert "--only-binary=:all:" in args
    assert "pip uninstall -y pip" in runs


def requirement_lines(name: str) -> list[Requirement]:
    lines = (ROOT / "docker" / name).read_text().splitlines()
    return [Requirement(line.split(" #")[0]) for line in lines if line.strip() and not line.startswith(("#", "--"))]


@pytest.mark.parametrize("name", ["requirements-cpu.txt", "requirements-gpu.txt", "requirements-tensorrt.txt"])
def test_requirements_are_exact_pins(name: str) -> None:
    for requirement in requirement_lines(name):
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{name}: {requirement} is not pinned"


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_pins_satisfy_the_projects_own_ranges(variant: str) -> None:
    """The image installs the project --no-deps, so its pins must meet pyproject.toml's dependencies."""
    pins = {r.name.lower(): next(iter(r.specifier)).version for r in requirement_lines(f"requirements-{variant}.txt")}
    if variant == "gpu":
        assert "onnxruntime" not in pins  # it would shadow onnxruntime-gpu's module
        pins["onnxruntime"] = pins["onnxruntime-gpu"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, project):
        assert dependency.name.lower() in pins, f"{dependency.name} is missing from requirements-{variant}.txt"
        version = pins[dependency.name.lower()].split("+")[0]
        assert dependency.specifier.contains(version, prereleases=True), f"{dependency} vs {version}"


def test_build_context_is_an_allowlist() -> None:
    patterns = [
        line for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"

    def included(path: str) -> bool:
        keep = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if (
                fnmatch.fnmatch(path, bare)
                or path.startswith(bare + "/")
                or fnmatch.fnmatch(path, bare.replace("**/", "*/"))
            ):
                keep = negated
        return keep

    for path in ("Dockerfile", "pyproject.toml", "README.md", "grader/worker.py", "docker/requirements-gpu.txt"):
        assert included(path), path
    for path in (
        ".git/config",
        ".venv/bin/python",
        "submissions/team/hw2/model.onnx",
        "grader-out/x/result.json",
        "reference/models/digits_cnn.onnx",
        "tests/test_cli.py",
        "grader/__pycache__/cli.cpython-311.pyc",
    ):
        assert not included(path), path
