"""Team services for the service-track tests: a small ASGI app around the course model, with a
behaviour (good, wrong answers, malformed JSON, errors under load, never healthy)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMMAND = ["{python}", "-m", "uvicorn", "app:app", "--uds", "{socket}", "--no-access-log", "--log-level", "warning"]

SERVICE_TEMPLATE = """
import asyncio
import itertools
import numpy as np
import onnxruntime as ort
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response, PlainTextResponse
from starlette.routing import Route

OPTIONS = ort.SessionOptions()
OPTIONS.intra_op_num_threads = 1  # as the reference service: onnxruntime would otherwise use every core
OPTIONS.inter_op_num_threads = 1
SESSION = ort.InferenceSession({model!r}, OPTIONS, providers=["CPUExecutionProvider"])
COUNTER = itertools.count()

async def health(request):
    return {health}

async def process(request):
    payload = await request.json()
    x = np.asarray(payload["input"], dtype=np.float32).reshape(1, 1, 8, 8)
    label = int(SESSION.run(None, {{"input": x}})[0][0].argmax())
    n = next(COUNTER)
    {behaviour}
    return JSONResponse({{"id": payload["id"], "label": label}})

app = Starlette(routes=[Route("/health", health), Route("/process", process, methods=["POST"])])
"""

BEHAVIOURS = {
    "good": ("Response('ok')", "pass"),
    "wrong": ("Response('ok')", "label = (label + 1) % 10"),
    "malformed": ("Response('ok')", "return PlainTextResponse('label=' + str(label))"),
    "flaky": ("Response('ok')", "if n % 3 == 0: return Response('overloaded', status_code=503)"),
    "never_healthy": ("Response('starting', status_code=503)", "pass"),
    "hangs": (
        "Response('ok')",
        "if n >= 5: print('stuck waiting for the batch queue', flush=True); await asyncio.sleep(3600)",
    ),
}


def team_service(folder: Path, behaviour: str, model: Path) -> Path:
    folder.mkdir(parents=True)
    health, body = BEHAVIOURS[behaviour]
    (folder / "app.py").write_text(SERVICE_TEMPLATE.format(model=str(model), health=health, behaviour=body))
    (folder / "submission.yaml").write_text(
        yaml.safe_dump(
            {
                "schema": 1,
                "assignment": "final-service",
                "team": "team-alpha",
                "members": ["octocat"],
                "service": {"command": COMMAND},
            },
            sort_keys=False,
        )
    )
    return folder


def short_load_test_assignments(root: Path) -> Path:
    """The shipped final-service assignment with a short load test (same checks and thresholds)."""
    shutil.copytree(ROOT / "assignments", root, dirs_exist_ok=True)
    path = root / "final-service" / "assignment.yaml"
    config = yaml.safe_load(path.read_text())
    config["service"].update(
        {
            "warmup_s": 0.3,
            "levels": [1, 4],
            "level_s": 0.8,
            "startup_s": 20,
            "max_requests": 200,
            "request_timeout_s": 2,
        }
    )
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return root
