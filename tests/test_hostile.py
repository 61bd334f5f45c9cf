"""Hostile submissions, built for the purpose, against the trust boundaries (docs/security.md).

Each test builds the hostile file or process a student could hand in and shows the class of
attack fails: under bubblewrap and the unshare fallback where a test is about the sandbox (the
Docker runner's are in tests/test_docker_*.py), end to end through the pipeline where it is about
a verdict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from grader import exitcodes
from grader.contracts.job import Limits
from grader.errors import SubmissionError
from grader.intake import pt2
from grader.sandbox.local import available_isolation, run_sandboxed
from grader.sandbox.view import View
from tests import builders
from tests.grading import grade

ROOT = Path(__file__).resolve().parent.parent
ISOLATING = [kind for kind in available_isolation() if kind != "none"]
needs_isolation = pytest.mark.skipif(not ISOLATING, reason="neither bubblewrap nor unshare works on this machine")


@pytest.fixture(params=ISOLATING or ["none"])
def isolating(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "none":
        pytest.skip("neither bubblewrap nor unshare works on this machine")
    monkeypatch.setenv("GRADER_ISOLATION", request.param)
    return request.param


def sandboxed(code: str, tmp_path: Path, readonly: tuple[Path, ...] = (), scratch_mb: int = 64, **limits: float):
    code_dir = tmp_path / "code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / "probe.py").write_text(textwrap.dedent(code))
    view = View(scratch=tmp_path / "scratch", scratch_mb=scratch_mb, readonly=(code_dir, *readonly))
    return run_sandboxed([sys.executable, str(code_dir / "probe.py")], Limits(**limits), view, tmp_path)


# --------------------------------------------------------------------------- 1. no submitted file runs code


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = builders.trained_tiny(epochs=1)
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    example = torch.zeros(2, 1, 8, 8)
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("b")},)), str(path))
    return path


def _rewritten(src: Path, dst: Path, edit=None, extra: dict[str, bytes] | None = None) -> Path:  # noqa: ANN001
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w") as out:
        for info in archive.infolist():
            data = archive.read(info)
            if edit is not None and info.filename.endswith("models/model.json"):
                program = json.loads(data)
                edit(program)
                data = json.dumps(program).encode()
            out.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            out.writestr(name, data)
    return dst


def test_a_pt2_with_a_second_copy_of_an_entry_is_refused(program: Path, tmp_path: Path) -> None:
    """zipfile returns the last copy, torch's reader the first: never let the two disagree."""
    prefix = zipfile.ZipFile(program).namelist()[0].split("/")[0]
    hostile = _rewritten(
        program, tmp_path / "dup.pt2", extra={f"{prefix}/data/weights/model_weights_config.json": b'{"config": {}}'}
    )
    with pytest.raises(SubmissionError, match="twice"):
        pt2.vetted_program(hostile, "dup.pt2")


@pytest.mark.parametrize(
    "target",
    [
        "torch.ops.aten.from_file.default",
        "torch.hub.load",
        "torch.load",
        "builtins.exec",
        "torch.ops.profiler._record_function_enter.default",
    ],
)
def test_a_pt2_calling_anything_but_a_tensor_operator_is_refused(program: Path, tmp_path: Path, target: str) -> None:
    def edit(p: dict) -> None:
        p["graph_module"]["graph"]["nodes"][0]["target"] = target

    with pytest.raises(SubmissionError, match="not a plain tensor operator"):
        pt2.vetted_program(_rewritten(program, tmp_path / "op.pt2", edit), "op.pt2")


def test_a_pt2_expression_that_sympy_would_evaluate_as_code_is_refused(program: Path, tmp_path: Path) -> None:
    def edit(p: dict) -> None:
        p["range_constraints"] = {"__import__('os').system('touch /tmp/pwned')": {"min_val": 1, "max_val": 2}}

    with pytest.raises(SubmissionError, match="symbolic shape expression"):
        pt2.vetted_program(_rewritten(program, tmp_path / "expr.pt2", edit), "expr.pt2")


def test_guard_code_in_a_pt2_never_runs(program: Path, tmp_path: Path) -> None:
    """ExportedProgram.module() exec()s guards_code: the rewritten archive has none."""
    marker = tmp_path / "GUARD_RAN"

    def edit(p: dict) -> None:
        p["guards_code"] = [f"open({str(marker)!r}, 'w').close() is None"]

    hostile = _rewritten(program, tmp_path / "guards.pt2", edit)
    prefix, entries = pt2.vetted_program(hostile, "guards.pt2")
    clean = pt2.repack(prefix, entries, tmp_path / "clean.pt2")
    torch.export.load(str(clean)).module()(torch.zeros(3, 1, 8, 8))
    assert not marker.exists()
    # and the hostile archive as it was is live: torch would have run the guard
    torch.export.load(str(hostile)).module()(torch.zeros(3, 1, 8, 8))
    assert marker.exists()


def test_a_pt2_whose_input_spec_imports_a_module_is_refused(
    program: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch parses a spec's context with an object hook that imports any module and walks its
    attributes (``__enum__``): one reviewer's archive dlopened a library that way."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / "planted_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass E: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    hook = json.dumps([{"__enum__": True, "fqn": "planted_module:E.__init__.__class__", "name": "x"}])

    def edit(p: dict) -> None:
        signature = p["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(signature["in_spec"])
        spec[1]["context"] = hook
        signature["in_spec"] = json.dumps(spec)

    hostile = _rewritten(program, tmp_path / "spec.pt2", edit)
    with pytest.raises(SubmissionError, match="plain containers"):
        pt2.vetted_program(hostile, "spec.pt2")
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 - whatever it raises once the import has happened
        torch.export.load(str(hostile))
    assert marker.exists()  # the control: torch itself would have run the planted module


def test_sample_inputs_behind_a_prefix_are_refused(program: Path, tmp_path: Path) -> None:
    """zipfile finds an archive after any prefix; torch reads the prefix as a legacy pickle."""
    import pickle

    prefix = zipfile.ZipFile(program).namelist()[0].split("/")[0]
    name = f"{prefix}/data/sample_inputs/model.pt"
    with zipfile.ZipFile(program) as archive:
        original = archive.read(name)
    hostile = tmp_path / "prefixed.pt2"
    with zipfile.ZipFile(program) as archive, zipfile.ZipFile(hostile, "w") as out:
        for info in archive.infolist():
            data = archive.read(info)
            out.writestr(info.filename, pickle.dumps(("legacy",)) + original if info.filename == name else data)
    with pytest.raises(SubmissionError, match="torch.save zip"):
        pt2.vetted_program(hostile, "prefixed.pt2")


def test_the_worker_loads_the_vetted_rewrite_not_the_submitted_archive(
    program: Path, fast_root: Path, tmp_path: Path
) -> None:
    onnx = builders.export(builders.trained_tiny(epochs=1), tmp_path / "baseline.onnx")
    folder = builders.submission(
        tmp_path / "s",
        {"baseline": onnx, "candidate": program},
        builders.confident_inputs(tmp_path / "inputs.npz", [onnx]),
    )
    grading = grade(folder, fast_root)
    assert grading.result.status == "graded", grading.result.problems
    assert grading.result.submission.files["candidate.pt2"]  # hashed as submitted


# --------------------------------------------------------------------------- 2. nothing worth stealing inside


@needs_isolation
def test_the_sandbox_sees_none_of_the_hosts_secrets(tmp_path: Path, isolating: str) -> None:
    secret = tmp_path / "secret-heldout"
    secret.mkdir(mode=0o700)
    (secret / "final-project.npz").write_text("labels")
    (tmp_path / "other-team.onnx").write_text("another team's model")
    home_files = [
        str(Path.home() / name) for name in (".bashrc", ".ssh", ".gitconfig", ".cache") if (Path.home() / name).exists()
    ]
    paths = {
        **{f"home {name}": name for name in home_files},
        "checkout_submissions": str(ROOT / "submissions"),
        "store": str(ROOT / "grader-data"),
        "secret": str(secret),
        "etc_shadow": "/etc/shadow",
        "git": str(ROOT / ".git"),
        "another team's file in the host's temp folder": str(tmp_path / "other-team.onnx"),
    }
    probe = """
        import json, os
        paths = json.loads(PATHS)
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
        seen = {k: os.path.exists(v) for k, v in paths.items()}
        print(json.dumps({**seen, "cap": status["CapEff"].strip()}))
        """
    found = sandboxed(probe.replace("PATHS", repr(json.dumps(paths))), tmp_path)
    seen = json.loads(found.output_tail.strip().splitlines()[-1])
    assert int(seen.pop("cap"), 16) == 0, "the sandboxed process kept capabilities"
    assert not any(seen.values()), seen


@needs_isolation
def test_the_sandbox_cannot_write_the_host(tmp_path: Path, isolating: str) -> None:
    """The unshare fallback once let a root model write a .pth into site-packages."""
    import site

    targets = [
        Path(site.getsitepackages()[0]) / "zz_planted.pth",
        ROOT / "grader" / "planted.py",
        Path(sys.prefix) / "planted",
    ]
    found = sandboxed(
        f"""
        import json
        result = {{}}
        for path in {[str(t) for t in targets]!r}:
            try:
                open(path, "w").write("import os")
                result[path] = "written"
            except OSError as exc:
                result[path] = type(exc).__name__
        print(json.dumps(result))
        """,
        tmp_path,
    )
    result = json.loads(found.output_tail.strip().splitlines()[-1])
    assert "written" not in result.values(), result
    assert not any(t.exists() for t in targets)


@needs_isolation
def test_the_sandbox_cannot_change_the_kernels_settings(tmp_path: Path, isolating: str) -> None:
    """As root, a capability-less process may still write sysctls (only file modes guard them):
    a core_pattern pointing at a submitted file would run it as root on the next crash."""
    found = sandboxed(
        """
        import json, os
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
        result = {"uid": os.getuid(), "bounding": status["CapBnd"].strip(), "effective": status["CapEff"].strip()}
        for name in ("kernel/core_pattern", "vm/drop_caches", "kernel/hostname"):
            path = "/proc/sys/" + name
            try:
                current = open(path).read()
                with open(path, "w") as handle:
                    handle.write(current if name != "vm/drop_caches" else "0")
                result[name] = "written"
            except OSError as exc:
                result[name] = type(exc).__name__
        print(json.dumps(result))
        """,
        tmp_path,
    )
    result = json.loads(found.output_tail.strip().splitlines()[-1])
    assert "written" not in result.values(), result
    assert int(result["effective"], 16) == 0 and int(result["bounding"], 16) == 0
    if os.geteuid() == 0:
        assert result["uid"] == 65534  # nobody, not a capability-less root


def test_held_out_labels_never_reach_the_sandbox(reference_paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from grader.config.assignment import load_assignment
    from grader.grading.pipeline import build_job
    from grader.intake.manifest import load_manifest
    from grader.intake.submission import vet_references, vet_submission

    secret = tmp_path / "runner-secret"
    secret.mkdir(mode=0o700)
    with np.load(reference_paths["eval_npz"]) as data:
        np.savez(secret / "final-project.npz", input=data["input"], labels=data["labels"])
    monkeypatch.setenv("GRADER_HELDOUT_DIR", str(secret))
    folder = ROOT / "reference/solutions/final-project"
    assignment = load_assignment("final-project")
    work = tmp_path / "work"
    (work / "vetted").mkdir(parents=True)
    artifacts = vet_submission(folder, load_manifest(folder), assignment, work / "vetted")
    plan = build_job(folder, artifacts, assignment, load_manifest(folder), vet_references(assignment), work)
    assert all(secret not in (p, *p.parents) for p in plan.folders.values())  # the secret folder is not mounted
    with np.load(plan.job.heldout_inputs.resolve(plan.folders)) as copy:
        assert "labels" not in copy.files and "input" in copy.files
    assert plan.heldout_labels and len(plan.heldout_labels) == len(np.load(secret / "final-project.npz")["labels"])
    assert plan.data == "held-out"


# --------------------------------------------------------------------------- 3. the sandbox's log: not in CI's


def test_a_broken_worker_shows_no_sandbox_log_on_stderr(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADER_")} | {"GRADER_ISOLATION": "no-such"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader.cli",
            "check",
            "reference/solutions/hw2-quantization-pruning",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == exitcodes.INTERNAL
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "internal-error.txt" in done.stderr and (tmp_path / "out" / "internal-error.txt").is_file()


def test_a_sandbox_log_goes_into_the_result_bounded(tmp_path: Path) -> None:
    from grader.errors import WorkerError
    from grader.grading import pipeline
    from tests.grading import local_sandboxes

    def broken(*_):  # noqa: ANN002, ANN202
        raise WorkerError("worker exited with 70", log_tail="x" * 10_000 + "THE END")

    sandboxes = local_sandboxes()
    grading = pipeline.grade(
        ROOT / "reference/solutions/hw2-quantization-pruning", type(sandboxes)(broken, sandboxes.services)
    )
    problem = grading.result.problems[0]
    assert grading.result.status == "error" and problem.hint.endswith("THE END")
    assert len(problem.hint) < 1700 and "x" * 10_000 not in grading.internal_error


# --------------------------------------------------------------------------- 4. services cannot reach each other


@needs_isolation
def test_a_team_service_cannot_touch_the_reference_services_socket(tmp_path: Path, isolating: str) -> None:
    from grader.sandbox.service_local import LocalServiceHost

    work = tmp_path / "work"
    work.mkdir()
    reference, team = tmp_path / "reference", tmp_path / "team"
    for folder in (reference, team):
        folder.mkdir()
    (reference / "serve.py").write_text(
        "import os, sys, time\nopen(os.environ['GRADER_SOCKET'], 'w').close()\ntime.sleep(30)\n"
    )
    (team / "attack.py").write_text(
        textwrap.dedent("""
        import os, time
        mine = os.environ["GRADER_SOCKET"]
        theirs = mine.replace("/service/socket/service.sock", "/reference_service/socket/reference_service.sock")
        try:
            os.unlink(theirs)
            result = "REMOVED"
        except OSError as exc:
            result = type(exc).__name__
        open(mine + ".result", "w").write(result)
        time.sleep(30)
        """)
    )
    host = LocalServiceHost()
    limits = Limits(wall_time_s=60)
    with host.start(["{python}", "serve.py"], reference, limits, work, 1, "reference_service", []) as ref:
        _wait_for(ref.socket)
        with host.start(["{python}", "attack.py"], team, limits, work, 1, "service", []) as attacker:
            result = Path(str(attacker.socket) + ".result")
            _wait_for(result)
            assert result.read_text() in ("FileNotFoundError", "PermissionError", "OSError")
        assert ref.socket.exists(), "the team's service removed the reference's socket"


def _wait_for(path: Path, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert path.exists(), f"{path} never appeared"


def test_a_reference_slowed_beside_the_team_voids_the_throughput_comparison() -> None:
    from grader.grading.loadgen import LevelStats
    from grader.grading.service import _disturbed

    alone = LevelStats(16, duration_s=1.0, ok=400)
    assert _disturbed(alone, [LevelStats(16, duration_s=1.0, ok=330)]) is None  # noise
    note = _disturbed(alone, [LevelStats(16, duration_s=1.0, ok=120)])
    assert note is not None and "void" in note.message and note.field == "service"


# --------------------------------------------------------------------------- 5. every resource is limited


def test_a_protobuf_that_expands_on_parsing_is_refused_within_limits(tmp_path: Path) -> None:
    """15 million empty tensors in 30 MB: parsed in the limited child, never in the grader's process."""
    from grader.config.assignment import load_assignment
    from grader.intake.isolated import vet_isolated

    def field(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    graph = b"\x2a\x00" * 15_000_000  # GraphProto.initializer (field 5), each an empty TensorProto
    model = _varint(1 << 3) + _varint(8) + field(8, b"\x10\x11") + field(7, graph)  # ir 8, opset 17, graph
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "baseline.onnx").write_bytes(model)
    (folder / "compressed.onnx").write_bytes(model)
    np.savez(folder / "inputs.npz", input=np.zeros((4, 1, 8, 8), np.float32))
    builders.write_manifest(folder)
    assignment = load_assignment("hw2-quantization-pruning")
    tight = assignment.model_copy(update={"limits": assignment.limits.model_copy(update={"model_file_mb": 64})})
    (tmp_path / "vetted").mkdir()
    started = time.monotonic()
    with pytest.raises(SubmissionError) as refused:  # out of memory in the child, or a parse its limit cut short
        vet_isolated_with(tight, folder, tmp_path / "vetted", vet_isolated)
    assert refused.value.kind in ("size", "format") and time.monotonic() - started < 200


def vet_isolated_with(assignment, folder: Path, vetted: Path, vet):  # noqa: ANN001, ANN201
    """``vet_isolated`` for an assignment changed in memory: written into a copy of the assignments."""
    import shutil

    import yaml

    root = vetted.parent / "assignments"
    shutil.copytree(ROOT / "assignments" / assignment.id, root / assignment.id)
    path = root / assignment.id / "assignment.yaml"
    config = yaml.safe_load(path.read_text())
    config.setdefault("limits", {}).update(assignment.limits.model_dump())
    path.write_text(yaml.safe_dump(config))
    return vet(folder, root, assignment, vetted)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@needs_isolation
def test_the_scratch_is_a_size_limited_tmpfs(tmp_path: Path, isolating: str) -> None:
    done = sandboxed(
        """
        import os
        written = 0
        try:
            for i in range(40):
                with open(f"block{i}", "wb") as handle:
                    handle.write(b"0" * (8 * 1024 * 1024))
                written += 8
            print("WROTE", written)
        except OSError as exc:
            print("FULL", written, exc.errno)
        """,
        tmp_path,
        scratch_mb=64,
    )
    assert "FULL" in done.output_tail and int(done.output_tail.split()[1]) <= 64
    assert not list((tmp_path / "scratch").glob("block*")) if (tmp_path / "scratch").exists() else True


@needs_isolation
def test_memory_is_limited_over_every_process_even_detached_ones(tmp_path: Path, isolating: str) -> None:
    """Children that call setsid leave the process group, not the PID namespace or the descendants' count."""
    done = sandboxed(
        """
        import os, time
        for _ in range(4):
            if os.fork() == 0:
                os.setsid()
                block = bytearray(120 * 1024 * 1024)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(60)
                os._exit(0)
        time.sleep(60)
        """,
        tmp_path,
        memory_mb=300,
        wall_time_s=60,
    )
    assert done.stopped is not None and done.stopped.kind == "memory_limit"


@needs_isolation
def test_memory_held_in_memfds_counts_against_the_limit(tmp_path: Path, isolating: str) -> None:
    """memfd pages are in no process's RSS once unmapped, and RLIMIT_AS does not see them."""
    found = sandboxed(
        """
        import os, time
        fds = []
        for n in range(40):  # 40 x 32 MiB = 1.25 GiB against a 256 MiB limit
            fd = os.memfd_create(f"hold{n}")
            for _ in range(32):
                os.write(fd, b"x" * (1 << 20))
            fds.append(fd)
        print("held", len(fds), flush=True)
        time.sleep(30)
        """,
        tmp_path,
        memory_mb=256,
        wall_time_s=60,
    )
    assert found.stopped is not None and found.stopped.kind == "memory_limit", found.output_tail


@needs_isolation
def test_nothing_started_in_the_sandbox_outlives_it(tmp_path: Path, isolating: str) -> None:
    marker = f"{700 + os.getpid() % 97}.{int(time.time()) % 1000}"
    done = sandboxed(
        f"""
        import os, subprocess
        if os.fork() == 0:
            os.setsid()
            subprocess.Popen(["sleep", "{marker}"])
            os._exit(0)
        print("daemon left behind", flush=True)
        """,
        tmp_path,
        wall_time_s=30,
    )
    assert done.returncode == 0 and "daemon left behind" in done.output_tail
    time.sleep(0.5)
    from tests.test_sandbox import _running_with_argument

    assert not _running_with_argument(marker), "a process started in the sandbox survived the grading"


# --------------------------------------------------------------------------- 6. a student's mistake is rejected


def test_a_deeply_nested_manifest_is_rejected_not_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "submissions" / "team-x" / "hw2"
    folder.mkdir(parents=True)
    (folder / "submission.yaml").write_text("schema: 1\nnotes: " + "[" * 5000 + "]" * 5000 + "\n")
    grading = grade(folder)
    assert grading.exit_code == exitcodes.REJECTED and "nested too deeply" in grading.result.problems[0].message


def test_aliases_that_multiply_a_manifest_are_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "submissions" / "team-x" / "hw2"
    folder.mkdir(parents=True)
    lines = ["schema: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    (folder / "submission.yaml").write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    grading = grade(folder)
    assert grading.exit_code == exitcodes.REJECTED and "aliases" in grading.result.problems[0].message
    assert time.monotonic() - started < 30


def test_outputs_that_change_shape_with_the_batch_are_the_students_mistake(
    tiny_models, fast_root: Path, tmp_path: Path
) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["logits"], axes=[0, 1], keepdims=0)],
        "batch-reducing",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "reducing.onnx")
    folder = builders.submission(
        tmp_path / "s",
        {"baseline": tiny_models["baseline"], "candidate": tmp_path / "reducing.onnx"},
        tiny_models["inputs"],
    )
    grading = grade(folder, fast_root)
    assert not grading.internal_error, grading.internal_error
    fidelity = next(c for c in grading.result.checks if c.id == "fidelity")
    assert fidelity.points == 0
    assert fidelity.status.value in {"fail", "skipped"}


# --------------------------------------------------------------------------- 7. no bidi or invisible text


def test_bidi_and_invisible_characters_are_made_visible_in_every_report(tmp_path: Path) -> None:
    from grader.report.render import render_html, render_markdown
    from tests.results_builders import make_result

    result = make_result(team="team-alpha", score=50)
    tricky = "evil\u202etxt.onnx \u2066hidden\u2069 zero\u200bwidth"
    result = result.model_copy(update={"submission": result.submission.model_copy(update={"notes": tricky})})
    for rendered in (render_markdown(result), render_html(result)):
        for char in ("\u202e", "\u2066", "\u2069"):
            assert char not in rendered
        assert "&lt;U+202E&gt;" in rendered or "<U+202E>" in rendered
    assert "\u200bwidth" not in render_markdown(result)  # the student's own; the grader's mention breakers differ


def test_every_test_docs_security_names_exists() -> None:
    """docs/security.md lists each class with its tests: a renamed test must not leave it stale."""
    import re

    text = (ROOT / "docs" / "security.md").read_text()
    defined = {
        m for path in (ROOT / "tests").glob("test_*.py") for m in re.findall(r"def (test_\w+)", path.read_text())
    }
    files = {path.stem for path in (ROOT / "tests").glob("test_*.py")}
    named = set(re.findall(r"`(?:tests/\w+\.py::)?(test_\w+)`", text))
    assert named and not {n for n in named if n not in defined and n not in files}


# --------------------------------------------------------------------------- 8. the host checks the report


def _observed(path: Path, evidence):  # noqa: ANN001, ANN202
    from grader.contracts.observations import ModelObservation, Observations

    model = ModelObservation(
        role="candidate", path=path.name, format="onnx", evidence=evidence, inputs=[], outputs=[], load_s=0.1
    )
    return Observations(models={"candidate": model})


def test_evidence_forged_inside_the_sandbox_is_refused_by_the_host(tmp_path: Path) -> None:
    """A worker that could run code would report int8 weights for an fp32 file: the file's own
    metadata, read on the host, says otherwise."""
    import onnx

    from grader.grading.crosscheck import contradictions
    from grader.intake.artifacts import vet_model
    from grader.worker.evidence.onnx_graph import onnx_evidence

    path = builders.export(builders.trained_tiny(epochs=1), tmp_path / "fp32.onnx")
    artifact = vet_model(tmp_path, "candidate", "fp32.onnx", None, 64)
    honest = onnx_evidence(onnx.load(str(path)))
    assert contradictions(_observed(path, honest), {"candidate": artifact.stored}) == []
    forged_weights = [
        w.model_copy(update={"quantized": True, "bits": 8, "stored_dtype": "int8"}) for w in honest.weights
    ]
    forged = honest.model_copy(update={"weights": forged_weights})
    (problem,) = contradictions(_observed(path, forged), {"candidate": artifact.stored})
    assert "stored as float32" in problem.message and problem.field == "models.candidate"
    invented = honest.model_copy(update={"params_total": 10**9})
    assert contradictions(_observed(path, invented), {"candidate": artifact.stored})


@pytest.mark.parametrize("kind", ["qoperator", "qdq", "nbits"])
def test_honest_quantized_files_agree_with_their_stored_metadata(tmp_path: Path, kind: str) -> None:
    import onnx

    from grader.grading.crosscheck import contradictions
    from grader.intake.artifacts import vet_model
    from grader.worker.evidence.onnx_graph import onnx_evidence

    fp32 = builders.export(builders.trained_tiny(epochs=1), tmp_path / "fp32.onnx")
    if kind == "nbits":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        from tests.test_evidence import _pruned_matmul_model

        quantizer = MatMulNBitsQuantizer(onnx.load(str(_pruned_matmul_model(tmp_path / "mm.onnx"))))
        quantizer.process()
        quantizer.model.save_model_to_file(str(tmp_path / "q.onnx"), True)
    else:
        builders.quantize(fp32, tmp_path / "q.onnx", fmt=kind)
    artifact = vet_model(tmp_path, "candidate", "q.onnx", None, 64)
    evidence = onnx_evidence(onnx.load(str(tmp_path / "q.onnx")))
    assert any(w.quantized for w in evidence.weights)
    assert contradictions(_observed(tmp_path / "q.onnx", evidence), {"candidate": artifact.stored}) == []
