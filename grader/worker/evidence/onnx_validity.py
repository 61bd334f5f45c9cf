"""Is an ONNX file valid by ONNX's own rules? ``onnx.checker`` with the full check, and the opset.

Run on the file's path, so models with external data and models over 2 GiB are checked the same
way. The full check includes strict shape inference, whose complaints are reported separately
because "the declared output shape is wrong" is a different fix from "an attribute is invalid".
"""

from __future__ import annotations

from pathlib import Path

from grader.contracts.observations import OnnxFacts

MAX_MESSAGE = 1500


def onnx_facts(model, path: Path) -> OnnxFacts:  # noqa: ANN001 - onnx is imported lazily by callers
    import onnx
    from onnx import shape_inference

    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    checker_error = shape_error = None
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except shape_inference.InferenceError as exc:
        shape_error = _tidy(exc)
    except Exception as exc:  # noqa: BLE001 - ValidationError and anything else the checker raises
        checker_error = _tidy(exc)
    return OnnxFacts(
        opset=opset,
        ir_version=int(model.ir_version),
        producer=_producer(model),
        checker_error=checker_error,
        shape_inference_error=shape_error,
    )


def _producer(model) -> str:  # noqa: ANN001
    name = f"{model.producer_name} {model.producer_version}".strip()
    return name[:128]


def _tidy(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:MAX_MESSAGE] + " ...") if len(text) > MAX_MESSAGE else text
