"""The course's reference inference service: the digits model behind a small ASGI app.

It is the baseline row of the final project's service track and the example in the docs.
Run it the way the grader does (a Unix socket, no network):

    python -m uvicorn app:app --app-dir reference/service --uds /tmp/digits.sock

``DIGITS_MODEL`` overrides the model path. By default the model is the ``digits_cnn.onnx`` next
to this file (where the grader's container image puts it, like a team ships its own model), else
the reference build's fp32 model in the course repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL = next(
    (p for p in (HERE / "digits_cnn.onnx", HERE.parent / "models" / "digits_cnn.onnx") if p.exists()),
    HERE.parent / "models" / "digits_cnn.onnx",
)


def _session() -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        os.environ.get("DIGITS_MODEL", str(DEFAULT_MODEL)), options, providers=["CPUExecutionProvider"]
    )


SESSION = _session()
INPUT = SESSION.get_inputs()[0].name


async def health(_: Request) -> Response:
    return Response("ok")


async def process(request: Request) -> JSONResponse:
    try:
        payload = await request.json()
        sample = np.asarray(payload["input"], dtype=np.float32).reshape(1, 1, 8, 8)
        request_id = str(payload["id"])
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "expected {id, input: 1x8x8 floats}"}, status_code=400)
    logits = SESSION.run(None, {INPUT: sample})[0]
    return JSONResponse({"id": request_id, "label": int(logits[0].argmax())})


app = Starlette(routes=[Route("/health", health), Route("/process", process, methods=["POST"])])
