"""``grader doctor``: is this machine ready to grade? The stack, the GPU, the driver and the engine.

A course admin runs it on a new runner before the first pull request (README, "A new GPU runner").
It probes where gradings run: with ``--runner docker`` inside the grading image, under the same
isolation and GPU plan as a grading; otherwise in a subprocess here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from typing import Any

from grader import __version__
from grader.commands.common import UsageError, add_runner_options, runner_config
from grader.errors import ConfigError, WorkerError

READY, NOT_READY = 0, 1
# the oldest Linux driver each CUDA major runs on (NVIDIA's CUDA toolkit release notes, table 3)
MIN_DRIVER = {13: "580", 12: "525.60"}


def register(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check that this machine can grade: the stack the worker sees, the GPU, the driver, the engine",
        epilog="exit codes:\n  0  ready: every check passed\n  1  not ready: each failed check says what to fix\n"
        "  2  usage error",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_runner_options(doctor)
    doctor.add_argument(
        "--expect-gpu",
        action="store_true",
        help="fail unless the worker can use a CUDA GPU (on the course's GPU runner)",
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON instead of lines")
    doctor.set_defaults(handler=run_doctor)


def driver_supports(cuda: str | None, driver: str | None) -> bool | None:
    """Whether a ``driver`` ("580.65.06") runs code built for ``cuda`` ("13.0"); None if unknown."""
    if not cuda or not driver:
        return None
    need = MIN_DRIVER.get(int(cuda.split(".")[0]))
    if need is None:
        return None
    return _numbers(driver)[:2] >= _numbers(need)


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def findings(stack: dict[str, Any], expect_gpu: bool) -> list[tuple[bool, str]]:
    """(passed, line) for each thing a grading needs, phrased with the fix where it fails."""
    out: list[tuple[bool, str]] = []
    for library in ("torch", "onnxruntime"):
        error = stack.get(f"{library}_error")
        out.append((not error, f"{library} {stack.get(library) or error}"))
    cuda, driver = stack.get("torch_cuda"), stack.get("nvidia_driver")
    out.append((True, f"NVIDIA driver {driver or 'none'}; torch built for CUDA {cuda or 'none (CPU build)'}"))
    supported = driver_supports(cuda, driver)
    if supported is False:
        need = MIN_DRIVER[int(str(cuda).split(".")[0])]
        out.append((False, f"driver {driver} is too old for CUDA {cuda}: install driver {need} or newer"))
    providers = stack.get("onnxruntime_providers") or []
    if expect_gpu:
        out.append(
            (bool(stack.get("gpu_works")), f"CUDA GPU usable by torch: {', '.join(stack.get('gpus') or []) or 'no'}")
        )
        out.append(("CUDAExecutionProvider" in providers, f"ONNX Runtime providers: {', '.join(providers) or 'none'}"))
        trt = stack.get("tensorrt") or stack.get("tensorrt_error")
        out.append((bool(stack.get("tensorrt")), f"TensorRT (hw6's engines): {trt or 'not installed'}"))
    else:
        out.append((True, f"ONNX Runtime providers: {', '.join(providers) or 'none'}"))
    return out


def probe_here() -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "grader.worker.stack"], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise WorkerError(f"the stack probe failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def probe_in_image(config: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The engine's facts and the stack probed inside the grading image, as a grading would start it."""
    from grader.contracts.job import Limits
    from grader.sandbox.docker import engine, engine_has_gpus, ensure_image, gpu_plan, run_in_container

    settings = config.docker
    client = engine()
    info = client.info()
    ensure_image(client, settings)
    with gpu_plan(client, settings) as gpus:  # leased like a grading's: it waits for a busy GPU
        facts = {
            "engine": f"Docker {client.version().get('Version', '?')} ({info.get('OperatingSystem', '?')})",
            "runtimes": sorted((info.get("Runtimes") or {}).keys()),
            "engine_gpus": engine_has_gpus(client),
            "gpu_plan": gpus.summary,
            "image": settings.image,
        }
        done = run_in_container(
            ["python", "-m", "grader.worker.stack"],
            settings,
            Limits(wall_time_s=300),
            {},
            client=client,
            gpus=gpus,
            capture_output=True,
        )
    if done.stopped is not None or done.returncode != 0:
        raise WorkerError(f"the stack probe failed in {settings.image}: {done.output_tail.strip()[-500:]}")
    return facts, json.loads(done.output or b"{}")


def host_gpu() -> str:
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi on this machine"
    query = "name,driver_version,memory.total,persistence_mode,clocks.sm,temperature.gpu"
    done = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, timeout=60
    )
    return done.stdout.strip().replace("\n", "; ") or done.stderr.strip()


def run_doctor(args: argparse.Namespace) -> int:
    try:
        config = runner_config(args)
    except (UsageError, ConfigError) as exc:
        print(f"grader doctor: {exc}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"grader": __version__, "runner": config.kind, "host_gpu": host_gpu()}
    try:
        if config.kind == "docker":
            engine_facts, stack = probe_in_image(config)
            report.update(engine_facts)
        else:
            stack = probe_here()
    except (WorkerError, ConfigError) as exc:
        report["error"] = str(exc)
        stack = {}
    report["stack"] = stack
    checks = [(False, report["error"])] if "error" in report else findings(stack, args.expect_gpu)
    if config.kind == "docker" and args.expect_gpu and not report.get("engine_gpus"):
        checks.append((False, "the Docker engine cannot pass a GPU through: install the NVIDIA Container Toolkit"))
    report["checks"] = [{"ok": ok, "what": line} for ok, line in checks]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"compression-grader {__version__}, runner {config.kind}; host GPU: {report['host_gpu']}")
        for key in ("engine", "image", "gpu_plan"):
            if key in report:
                print(f"  {key.replace('_', ' ')}: {report[key]}")
        for ok, line in checks:
            print(f"  {'ok  ' if ok else 'FAIL'}  {line}")
    ready = all(ok for ok, _ in checks)
    print("ready to grade" if ready else "not ready: fix each FAIL above", file=sys.stderr)
    return READY if ready else NOT_READY
