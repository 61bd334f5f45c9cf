"""The local sandbox's GPU passthrough, tested with real sandboxed processes over fake GPU nodes.

The nodes are character devices with the null device's numbers, named as the NVIDIA driver names
its own, in a folder passed as the device root; the command runs through ``run_for_job``, the
path ``run_worker`` takes, and reports from inside the sandbox what it sees under ``/dev``,
whether each node opens for writing, and its address-space limit. Each isolation this machine
offers is tried (bubblewrap, the unshare fallback).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from grader.contracts.job import Job, Limits, MeasureSpec
from grader.sandbox.cgroup import memory_cgroup
from grader.sandbox.gpus import Gpu
from grader.sandbox.local import available_isolation, run_for_job, run_worker
from grader.sandbox.view import View, gpu_sysfs, gpu_view
from tests.gpu_fakes import ROOT, fake_nodes, finish, first_line, holder, lock_folder

ISOLATING = [kind for kind in available_isolation() if kind != "none"]
pytestmark = [
    pytest.mark.skipif(not ISOLATING, reason="neither bubblewrap nor unshare works on this machine"),
    pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes needs root"),
]
PROBE = """
    import json, os
    found = {"nodes": sorted(n for n in os.listdir("/dev") if n.startswith("nvidia")), "usable": {}}
    for name in found["nodes"]:
        try:
            with open(f"/dev/{name}", "wb", buffering=0) as node:
                node.write(b"x")
            found["usable"][name] = "yes"
        except OSError as exc:
            found["usable"][name] = exc.strerror
    with open("/proc/self/limits") as limits:
        found["address_space"] = next(l for l in limits if l.startswith("Max address space")).split()[3:5]
    found["cuda_visible"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.write(3, json.dumps(found).encode())
"""


@pytest.fixture(params=ISOLATING or ["none"])
def isolating(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GRADER_ISOLATION", request.param)
    return request.param


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return lock_folder(tmp_path, monkeypatch)


@pytest.fixture
def dev(tmp_path: Path) -> Path:
    """A fake device root: the driver's control and unified-memory nodes, and two GPUs."""
    return fake_nodes(tmp_path / "dev", ["nvidiactl", "nvidia-uvm", "nvidia0", "nvidia1"])


def job(device: str | None) -> Job:
    return Job(models=[], inputs=None, measure=MeasureSpec(device=device))


def probe(tmp_path: Path, device: str | None, dev: Path, code: str = PROBE, **limits: float) -> tuple[dict, str]:
    """Run ``code`` for a job on ``device`` as ``run_worker`` would; what it reported, and the description."""
    code_dir = tmp_path / "code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / "probe.py").write_text(textwrap.dedent(code))
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    view = View(scratch=work / "scratch", readonly=(code_dir,))
    done, sandbox, _ = run_for_job(
        job(device), [sys.executable, str(code_dir / "probe.py")], Limits(**limits), view, work, dev, tmp_path / "none"
    )
    return (json.loads(done.output) if done.output else {"stopped": done.stopped, "log": done.output_tail}), sandbox


def expected_memory_note() -> str:
    """What the description must say about memory with a GPU: the cgroup where one can be made here."""
    cgroup = memory_cgroup(64)
    if cgroup is None:
        return "memory: RSS watch of the process tree (no cgroup here)"
    cgroup.remove()
    return "memory: cgroup limit"


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_a_gpu_job_sees_the_control_nodes_and_exactly_one_gpu(
    tmp_path: Path, dev: Path, locks: Path, isolating: str, device: str
) -> None:
    found, sandbox = probe(tmp_path, device, dev)
    gpus = [name for name in found["nodes"] if name in ("nvidia0", "nvidia1")]
    assert len(gpus) == 1, found
    assert sorted(found["nodes"]) == sorted(["nvidia-uvm", "nvidiactl", *gpus]), found
    assert found["usable"] == {name: "yes" for name in found["nodes"]}, found
    assert found["address_space"] == ["unlimited", "unlimited"], found  # a CUDA context would not fit
    assert f"GPU {gpus[0][-1]} passed through (/dev/{gpus[0]})" in sandbox
    assert expected_memory_note() in sandbox and len(sandbox) <= 300


def test_the_gpu_passed_is_the_one_no_other_grading_holds(tmp_path: Path, dev: Path, locks: Path) -> None:
    other = holder(tmp_path, "other-grading", indices="0")
    try:
        assert first_line(other[0], 20) == "0"
        found, sandbox = probe(tmp_path, "cuda", dev)
    finally:
        finish(other)
    assert [n for n in found["nodes"] if n[-1].isdigit()] == ["nvidia1"], found
    assert "GPU 1 passed through" in sandbox


@pytest.mark.parametrize("device", [None, "cpu"])
def test_a_cpu_job_gets_no_gpu_and_keeps_its_address_space_limit(
    tmp_path: Path, dev: Path, locks: Path, isolating: str, device: str | None
) -> None:
    found, sandbox = probe(tmp_path, device, dev)
    assert found["nodes"] == [] and found["cuda_visible"] is None, found
    assert all(value.isdigit() for value in found["address_space"]), found  # the probe tells the two apart
    assert "GPU" not in sandbox and "memory: address-space rlimit + " in sandbox
    assert not locks.exists() or not any(locks.iterdir())  # nothing was leased


def test_a_machine_without_the_driver_passes_nothing(tmp_path: Path, locks: Path, isolating: str) -> None:
    no_driver = fake_nodes(tmp_path / "dev", ["nvidia0"])  # a node, but no nvidiactl
    found, sandbox = probe(tmp_path, "cuda", no_driver)
    assert found["nodes"] == [] and all(value.isdigit() for value in found["address_space"]), found
    assert "GPU" not in sandbox


def test_memory_is_still_limited_with_a_gpu_passed_through(tmp_path: Path, dev: Path, locks: Path) -> None:
    """No address-space limit with a GPU: the cgroup (or the watch of the tree) must stop growth."""
    found, sandbox = probe(
        tmp_path,
        "cuda",
        dev,
        """
        import time
        chunks = []
        for _ in range(200):
            chunks.append(bytearray(16 * 1024 * 1024))
            for i in range(0, len(chunks[-1]), 4096):
                chunks[-1][i] = 1
            time.sleep(0.02)
        print("SURVIVED")
        """,
        memory_mb=300,
        wall_time_s=60,
    )
    assert found["stopped"] is not None and found["stopped"].kind == "memory_limit", found
    assert "SURVIVED" not in found["log"] and "GPU" in sandbox


def test_run_worker_records_the_gpu_and_the_memory_limit(tmp_path: Path, dev: Path, locks: Path) -> None:
    """The real worker, on an empty job: the result's environment says what the sandbox gave it."""
    work = tmp_path / "work"
    work.mkdir()
    observations = run_worker(job("cuda"), Limits(), work, {}, device_root=dev)
    assert "passed through (/dev/nvidia" in observations.environment.sandbox
    assert expected_memory_note() in observations.environment.sandbox
    cpu = run_worker(job("cpu"), Limits(), tmp_path / "work", {}, device_root=dev)
    assert "GPU" not in cpu.environment.sandbox and "address-space rlimit" in cpu.environment.sandbox


def test_the_drivers_sysfs_is_read_only_and_only_where_the_module_is_loaded(tmp_path: Path) -> None:
    sys_root = tmp_path / "sys"
    for folder in (
        "module/nvidia",
        "module/nvidia_uvm",
        "bus/pci/devices",
        "devices/pci0000:00",
        "devices/pci0000:40",
        "devices/system/node",
        "devices/virtual/dmi",
        "fs/cgroup",
        "kernel",
        "class/net",
    ):
        (sys_root / folder).mkdir(parents=True)
    wanted = {"module/nvidia", "module/nvidia_uvm", "bus/pci/devices", "devices/pci0000:00", "devices/pci0000:40"}
    wanted.add("devices/system/node")
    assert {str(p.relative_to(sys_root)) for p in gpu_sysfs(sys_root)} == wanted
    view = gpu_view(View(scratch=tmp_path / "s"), Gpu("0"), tmp_path / "no-dev", sys_root)
    assert set(gpu_sysfs(sys_root)) <= set(view.readonly) and not view.writable
    (sys_root / "module" / "nvidia").rmdir()
    assert gpu_sysfs(sys_root) == []


FRESH = """
    import json, os, sys
    from pathlib import Path
    from grader.contracts.job import Job, Limits, MeasureSpec
    from grader.sandbox.gpus import Gpu, lease
    from grader.sandbox.local import run_for_job
    from grader.sandbox.view import View
    dev, work = Path(sys.argv[1]), Path(sys.argv[2])
    with lease([Gpu("0"), Gpu("1")]):
        print("lock on fd 3:", os.readlink("/proc/self/fd/3").endswith(".lock"), flush=True)
        job = Job(models=[], inputs=None, measure=MeasureSpec(device="cuda"))
        command = [sys.executable, "-c", "import os; os.write(3, b'reported')"]
        done, _, _ = run_for_job(job, command, Limits(), View(scratch=work / "scratch"), work, dev)
    print("output:", done.output)
"""


def test_the_lease_does_not_take_the_workers_report_channel(tmp_path: Path, dev: Path, locks: Path) -> None:
    """In a fresh process the lock file can get descriptor 3, the number the worker reports on: the
    sandboxed child must still start and report there."""
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FRESH), str(dev), str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "lock on fd 3: True" in done.stdout, done.stdout + done.stderr  # the case this test is about
    assert "output: b'reported'" in done.stdout, done.stdout + done.stderr
