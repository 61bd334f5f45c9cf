"""The Docker runner's isolation, tested against a real engine: each test fails if its setting is missing.

Commands run through ``run_in_container``, the same function that runs the grading worker, with
the production settings (only the image is a registry-free test image of this checkout). Where a
setting's absence would not show by itself, a control run through the Docker SDK with that one
setting changed shows that the probe can tell the difference.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from grader.config.course import DockerSettings
from grader.contracts.job import Limits
from grader.errors import WorkerError
from grader.sandbox.docker import LABEL, engine_has_gpus, gpu_plan, mounts, run_in_container
from grader.sandbox.gpus import LOCKS_ENV


@pytest.fixture(scope="module", autouse=True)
def _engine_to_ourselves():  # noqa: ANN202
    """No other Docker test module runs while this one does (see tests.docker_host.engine_to_ourselves)."""
    from tests.docker_host import engine_to_ourselves

    yield from engine_to_ourselves()


def run_python(code: str, settings: DockerSettings, workdir: Path, threads: int = 1, **limits: float):
    """Run ``code`` with the container's Python; returns how it ended and what it printed."""
    workdir.mkdir(parents=True, exist_ok=True)
    done = run_in_container(["python", "-c", textwrap.dedent(code)], settings, Limits(**limits), {}, threads=threads)
    return done, done.output_tail


def probe_json(code: str, settings: DockerSettings, workdir: Path, **kwargs) -> dict:
    done, out = run_python(code, settings, workdir, **kwargs)
    assert done.returncode == 0 and done.stopped is None, out
    return json.loads(out.strip().splitlines()[-1])


def worker_containers(client) -> list:
    return client.containers.list(all=True, filters={"label": LABEL})


NETWORK_PROBE = """
    import errno, json, os, socket
    found = {"interfaces": sorted(os.listdir("/sys/class/net"))}
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.connect(("192.0.2.1", 9))  # picks a route, sends nothing
        found["route"] = "yes"
    except OSError as exc:
        found["route"] = errno.errorcode.get(exc.errno, str(exc.errno))
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
        found["host_loopback"] = "connected"
    except OSError as exc:
        found["host_loopback"] = type(exc).__name__
    print(json.dumps(found))
"""


def test_network_is_unreachable_from_inside(docker_client, docker_settings, listener, tmp_path: Path) -> None:
    port, accepted = listener
    code = NETWORK_PROBE.replace("PORT", str(port))
    found = probe_json(code, docker_settings, tmp_path)
    assert found["interfaces"] == ["lo"], found
    assert found["route"] == "ENETUNREACH", found
    assert found["host_loopback"] != "connected" and not accepted

    # control: the same probe in the host's network namespace does reach the listener
    control = docker_client.containers.run(
        docker_settings.image,
        ["python", "-c", textwrap.dedent(code)],
        remove=True,
        network_mode="host",
        mounts=mounts({}, docker_settings),
    ).decode()
    assert json.loads(control.strip().splitlines()[-1])["host_loopback"] == "connected"


def test_root_filesystem_is_read_only(docker_settings, tmp_path: Path) -> None:
    found = probe_json(
        """
        import errno, json, os
        found = {}
        for path in ("/var/tmp/planted", "/grading/planted", "/tmp/scratch", "/grading/job/planted"):
            try:
                with open(path, "w") as handle:
                    handle.write("x")
                found[path] = "written"
            except OSError as exc:
                found[path] = errno.errorcode[exc.errno]
        print(json.dumps(found))
        """,
        docker_settings,
        tmp_path,
    )
    assert found["/var/tmp/planted"] == "EROFS"  # the image makes /var/tmp writable by anyone (mode 1777)
    assert found["/grading/planted"] == "EROFS"
    assert found["/tmp/scratch"] == "written"  # the tmpfs scratch space, the only writable place
    assert found["/grading/job/planted"] in ("EROFS", "ENOENT")  # no writable mount at all


def test_submission_is_mounted_read_only(docker_settings, tmp_path: Path) -> None:
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "model.onnx").write_text("original")
    workdir = tmp_path / "work"
    workdir.mkdir()
    done = run_in_container(
        [
            "python",
            "-c",
            textwrap.dedent("""
        try:
            open("/grading/in/submission/model.onnx", "w").write("tampered")
            print("WROTE")
        except OSError as exc:
            print("REFUSED", exc)
        """),
        ],
        docker_settings,
        Limits(),
        {"submission": submission},
    )
    assert "REFUSED" in done.output_tail and "Read-only file system" in done.output_tail
    assert (submission / "model.onnx").read_text() == "original"


def test_worker_is_unprivileged(docker_settings, tmp_path: Path) -> None:
    found = probe_json(
        """
        import json, os, resource
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
        print(json.dumps({
            "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
            "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
            "no_new_privs": status["NoNewPrivs"].strip(), "seccomp": status["Seccomp"].strip(),
            "core": resource.getrlimit(resource.RLIMIT_CORE), "fsize": resource.getrlimit(resource.RLIMIT_FSIZE),
            "ipc": os.readlink("/proc/self/ns/ipc"),
        }))
        """,
        docker_settings,
        tmp_path,
    )
    assert found["uid"] == found["euid"] == 65534 and found["gid"] == 65534
    assert int(found["cap_eff"], 16) == 0
    assert int(found["cap_bnd"], 16) == 0, "capabilities were not dropped"
    assert found["no_new_privs"] == "1"
    assert found["seccomp"] == "2"  # the engine's default seccomp filter stays on
    assert found["core"] == [0, 0]
    assert found["fsize"] == [64 * 2**20] * 2
    assert found["ipc"] != os.readlink("/proc/self/ns/ipc")


def test_host_environment_is_not_visible_and_threads_are_explicit(
    docker_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_fake_secret_value")
    monkeypatch.setenv("ACTIONS_RUNTIME_TOKEN", "also-secret")
    found = probe_json(
        """
        import json, os
        print(json.dumps({"env": dict(os.environ), "cpus_seen": os.cpu_count()}))
        """,
        docker_settings,
        tmp_path,
        threads=3,
    )
    env = found["env"]
    assert "GITHUB_TOKEN" not in env and "ACTIONS_RUNTIME_TOKEN" not in env
    assert not any("secret" in value for value in env.values())
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "3"
    assert env["HOME"] == "/tmp"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"  # no GPU requested here: none even under NVIDIA's runtime


def test_process_count_is_limited(docker_settings, tmp_path: Path) -> None:
    limited = docker_settings.model_copy(update={"pids": 24})
    found = probe_json(
        """
        import json, os, time
        started = 0
        for _ in range(100):
            try:
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                started += 1
            except OSError:
                break
        print(json.dumps({"started": started}))
        """,
        limited,
        tmp_path,
        wall_time_s=60,
    )
    assert 0 < found["started"] < 24


def test_cpu_limit_is_a_quota(docker_settings, tmp_path: Path) -> None:
    half = docker_settings.model_copy(update={"cpus": 0.5})
    found = probe_json(
        """
        import json, pathlib
        v1 = pathlib.Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        if v1.exists():
            quota, period = int(v1.read_text()), int(pathlib.Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        else:
            quota, period = (int(x) for x in pathlib.Path("/sys/fs/cgroup/cpu.max").read_text().split())
        print(json.dumps({"cores": quota / period}))
        """,
        half,
        tmp_path,
    )
    assert found["cores"] == pytest.approx(0.5)


def test_memory_limit_kills_resident_growth(docker_client, docker_settings, tmp_path: Path) -> None:
    done, out = run_python(
        """
        chunks = []
        for _ in range(128):
            chunks.append(bytearray(16 * 1024 * 1024))
            for i in range(0, len(chunks[-1]), 4096):
                chunks[-1][i] = 1
        print("SURVIVED")
        """,
        docker_settings,
        tmp_path,
        memory_mb=256,
        wall_time_s=120,
    )
    assert done.stopped is not None and done.stopped.kind == "memory_limit", out
    assert "SURVIVED" not in out
    assert worker_containers(docker_client) == []


def test_time_limit_kills_and_removes_the_container(docker_client, docker_settings, tmp_path: Path) -> None:
    done, out = run_python(
        """
        import time
        print("started", flush=True)
        time.sleep(600)
        """,
        docker_settings,
        tmp_path,
        wall_time_s=3,
    )
    assert done.stopped is not None and done.stopped.kind == "time_limit"
    assert done.wall_s < 60
    assert "started" in out
    assert worker_containers(docker_client) == []


def test_gpu_request_reaches_the_engine(
    docker_client, docker_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if engine_has_gpus(docker_client):
        pytest.skip("this engine can pass GPUs through; the refusal below is for engines that cannot")
    monkeypatch.setenv(LOCKS_ENV, str(tmp_path / "locks"))
    with gpu_plan(docker_client, docker_settings) as plan:
        assert plan.requests == [] and "CPU only" in plan.summary  # auto: CPU only here
    wants_gpu = docker_settings.model_copy(update={"gpus": ["0"]})  # pinned: requested even so
    with pytest.raises(WorkerError, match="NVIDIA Container Toolkit"):
        run_python("print('ran')", wants_gpu, tmp_path)
    assert worker_containers(docker_client) == []


def test_unreadable_submission_is_the_graders_problem(docker_settings, tmp_path: Path) -> None:
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "model.onnx").write_text("x")
    (submission / "model.onnx").chmod(0o600)
    with pytest.raises(WorkerError, match="chmod -R a\\+rX"):
        run_in_container(["python", "-c", "pass"], docker_settings, Limits(), {"submission": submission})


def test_missing_image_is_said_plainly(docker_settings, tmp_path: Path) -> None:
    missing = docker_settings.model_copy(update={"image": "compression-grader-no-such-image:never", "pull": False})
    with pytest.raises(WorkerError, match="not on this Docker engine"):
        run_in_container(["python", "-c", "pass"], missing, Limits(), {})


def test_a_socket_folder_is_open_only_inside_a_private_parent(tmp_path: Path) -> None:
    from grader.sandbox.base import writable_folder

    workdir = tmp_path / "work"
    workdir.mkdir(mode=0o700)
    out = writable_folder(workdir / "service" / "socket")
    assert out.stat().st_mode & 0o7777 == 0o777  # the container's user writes; not sticky, so the host can clean up
    assert workdir.stat().st_mode & 0o777 == 0o700  # other host users still cannot reach it


def test_the_worker_reports_on_stdout_read_while_it_runs(docker_settings, tmp_path: Path) -> None:
    """No writable mount: the report comes back on stdout (its log on stderr), capped."""
    done = run_in_container(
        ["python", "-c", "import sys; print('log', file=sys.stderr); sys.stdout.write('R' * 100000)"],
        docker_settings,
        Limits(),
        {},
        capture_output=True,
    )
    assert done.output == b"R" * 100000 and "log" in done.output_tail


def test_a_report_over_the_cap_is_refused(docker_settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from grader.sandbox import docker as docker_sandbox

    monkeypatch.setattr(docker_sandbox, "MAX_OUTPUT_BYTES", 1000)
    with pytest.raises(WorkerError, match="larger than allowed"):
        run_in_container(
            ["python", "-c", "import sys; sys.stdout.write('R' * 5000)"],
            docker_settings,
            Limits(),
            {},
            capture_output=True,
        )


def test_the_scratch_is_a_size_limited_tmpfs(docker_settings, tmp_path: Path) -> None:
    """The container's only writable place holds at most the scratch size (issue #12)."""
    found = probe_json(
        """
        import errno, json
        written = 0
        try:  # files of 16 MiB each, below the per-file limit: only the tmpfs's size can stop them
            for n in range(256):
                with open(f"/tmp/fill{n}", "wb") as handle:
                    for _ in range(16):
                        handle.write(b"x" * (1 << 20))
                        handle.flush()
                        written += 1
            result = "wrote it all"
        except OSError as exc:
            result = errno.errorcode[exc.errno]
        print(json.dumps({"result": result, "mb": written}))
        """,
        docker_settings,
        tmp_path,
    )
    assert found["result"] == "ENOSPC" and found["mb"] <= docker_settings.scratch_mb, found
