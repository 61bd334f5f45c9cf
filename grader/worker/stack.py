"""``python -m grader.worker.stack``: the software and hardware the worker would grade with, as JSON.

``grader doctor`` runs it where gradings run (in the grading image under the Docker runner's
isolation and GPU plan, or here), so a course admin sees the stack the worker sees before the
first pull request: a CUDA build that does not match the driver, a missing CUDA provider or a
TensorRT that does not load shows here, not as a pending check in a student's report.
"""

from __future__ import annotations

import json
import platform
import sys
from typing import Any


def probe() -> dict[str, Any]:
    facts: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch_cuda"] = torch.version.cuda
        facts["cuda_available"] = torch.cuda.is_available()
        if facts["cuda_available"]:
            facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            facts["cudnn"] = torch.backends.cudnn.version()
            facts["gpu_works"] = bool((torch.ones(4, device="cuda") * 2).sum().item() == 8)
    except Exception as exc:  # noqa: BLE001 - a broken install is the finding
        facts["torch_error"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        import onnxruntime

        facts["onnxruntime"] = onnxruntime.__version__
        facts["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception as exc:  # noqa: BLE001
        facts["onnxruntime_error"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        from grader.worker.tensorrt import _import_tensorrt

        facts["tensorrt"] = _import_tensorrt().__version__
    except ImportError:
        facts["tensorrt"] = None
    except Exception as exc:  # noqa: BLE001 - installed but cannot load its libraries
        facts["tensorrt_error"] = f"{type(exc).__name__}: {exc}"[:300]
    from grader.worker.gpu import gpu_facts
    from grader.worker.session import nvidia_driver

    facts["nvidia_driver"] = nvidia_driver() or None
    gpu = gpu_facts() if facts.get("cuda_available") else None
    if gpu is not None:  # what every GPU grading records: model, driver, clocks, persistence mode
        facts["gpu_facts"] = gpu.model_dump(exclude_none=True)
    return facts


def main() -> int:
    sys.stdout.write(json.dumps(probe()) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
