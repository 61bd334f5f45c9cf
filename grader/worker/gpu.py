"""What a scientist records about the GPU a grading timed on: model, driver, clocks, temperature.

Read through NVML (``nvidia-ml-py``, where installed) or ``nvidia-smi`` (which the NVIDIA container
toolkit mounts into a GPU container), never through CUDA itself, so asking costs nothing and
works before any model is loaded. Clocks and temperature are sampled at the start and the end of
the run: a GPU that throttled or boosted while the models were timed shows here, and the host
warns on the checks that read timing figures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from grader.contracts.observations import GpuFacts, GpuState

DRIVER_PROC = Path("/proc/driver/nvidia/gpus")
SMI_TIMEOUT_S = 10
SMI_FIELDS = (
    "name,uuid,driver_version,memory.total,persistence_mode,clocks.max.sm,"
    "clocks.sm,clocks.mem,temperature.gpu,power.draw,clocks_throttle_reasons.active"
)


def nvidia_gpu_names(driver_proc: Path = DRIVER_PROC) -> list[str]:
    """The GPUs the driver lists for this process (in a container: only those passed in)."""
    names = []
    for info in sorted(driver_proc.glob("*/information")):
        try:
            lines = info.read_text(errors="replace").splitlines()
        except OSError:
            continue
        names += [line.split(":", 1)[1].strip() for line in lines if line.startswith("Model:")]
    return names


def parse_smi_line(line: str) -> dict[str, str]:
    """One ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits`` line, by field name."""
    values = [v.strip() for v in line.split(",")]
    return dict(zip(SMI_FIELDS.split(","), values))


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "[N/A]", "N/A") else None
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    value = _number(text)
    return None if value is None else int(value)


def state_from_smi(fields: dict[str, str]) -> GpuState:
    return GpuState(
        sm_clock_mhz=_int(fields.get("clocks.sm")),
        memory_clock_mhz=_int(fields.get("clocks.mem")),
        temperature_c=_int(fields.get("temperature.gpu")),
        power_w=_number(fields.get("power.draw")),
        throttle_reasons=(fields.get("clocks_throttle_reasons.active") or "")[:32],
    )


def facts_from_smi(fields: dict[str, str]) -> GpuFacts:
    return GpuFacts(
        name=(fields.get("name") or "")[:200],
        uuid=(fields.get("uuid") or "")[:64],
        driver=(fields.get("driver_version") or "")[:32],
        memory_mb=_int(fields.get("memory.total")),
        persistence_mode=(fields.get("persistence_mode") or "")[:16],
        max_sm_clock_mhz=_int(fields.get("clocks.max.sm")),
        start=state_from_smi(fields),
    )


def leased_gpu() -> str:
    """The GPU this grading was given: the UUID the local sandbox puts in ``CUDA_VISIBLE_DEVICES``
    (NVML and nvidia-smi ignore that variable and count every GPU the driver shows), else the
    first one (in a container, the only one passed in)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return visible if visible.startswith(("GPU-", "MIG-")) else "0"


def _smi_query() -> dict[str, str] | None:
    """The grading GPU's fields from ``nvidia-smi``, or ``None`` where it cannot answer."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run(
            [smi, f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits", f"--id={leased_gpu()}"],
            capture_output=True,
            text=True,
            timeout=SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return parse_smi_line(lines[0]) if done.returncode == 0 and lines else None


def _nvml_query() -> dict[str, str] | None:
    """The same fields through NVML, where ``nvidia-ml-py`` is installed."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = _nvml_handle(pynvml)
        name = pynvml.nvmlDeviceGetName(handle)
        fields = {
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "uuid": str(pynvml.nvmlDeviceGetUUID(handle)),
            "driver_version": str(pynvml.nvmlSystemGetDriverVersion()),
            "memory.total": str(pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20),
            "persistence_mode": "Enabled" if pynvml.nvmlDeviceGetPersistenceMode(handle) else "Disabled",
            "clocks.max.sm": str(pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)),
            "clocks.sm": str(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
            "clocks.mem": str(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM)),
            "temperature.gpu": str(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
            "power.draw": str(pynvml.nvmlDeviceGetPowerUsage(handle) / 1000),
            "clocks_throttle_reasons.active": hex(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)),
        }
        return {k: v.replace(",", " ") for k, v in fields.items()}
    except Exception:  # noqa: BLE001 - NVML missing or refusing: nvidia-smi is asked instead
        return None


def _nvml_handle(pynvml: object):  # noqa: ANN202 - an NVML handle
    gpu = leased_gpu()
    if gpu.startswith(("GPU-", "MIG-")):
        return pynvml.nvmlDeviceGetHandleByUUID(gpu)
    return pynvml.nvmlDeviceGetHandleByIndex(int(gpu))


def query() -> dict[str, str] | None:
    return _nvml_query() or _smi_query()


def gpu_facts() -> GpuFacts | None:
    """The GPU's identity and its state now (the start of the run); ``None`` where nothing answers."""
    fields = query()
    if fields is None:
        return None
    facts = facts_from_smi(fields)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        facts.compute_capability = ".".join(map(str, torch.cuda.get_device_capability()))
    return facts


def gpu_state() -> GpuState | None:
    fields = query()
    return None if fields is None else state_from_smi(fields)


def clocks_moved(facts: GpuFacts, tolerance: float) -> str:
    """What moved between the start and the end of the run ("" when nothing did beyond ``tolerance``)."""
    start, end = facts.start, facts.end
    if start is None or end is None:
        return ""
    moved = []
    for label, a, b in (
        ("SM clock", start.sm_clock_mhz, end.sm_clock_mhz),
        ("memory clock", start.memory_clock_mhz, end.memory_clock_mhz),
    ):
        if a and b and abs(b - a) > tolerance * a:
            moved.append(f"{label} {a} -> {b} MHz")
    return ", ".join(moved)


def device_memory_used_mb() -> float | None:
    """Memory in use on the grading's GPU (the whole device: one grading holds it alone)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        return (total - free) / 2**20
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetMemoryInfo(_nvml_handle(pynvml)).used / 2**20
    except Exception:  # noqa: BLE001 - no NVML: not measured
        return None
