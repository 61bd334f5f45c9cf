"""Shared rules about how a model behaves when it runs: stable shapes, batching, numeric parity,
ONNX validity and engines the grader builds itself.

Each reads the worker's observations (probes, per-output parity, ONNX facts, derived-model
status) and never re-measures anything.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from grader.checks.engine import CheckContext, Outcome, Params, register
from grader.checks.shared import fmt as _fmt
from grader.contracts.figures import pair_key
from grader.contracts.observations import BatchProbe, FidelityComparison, OutputParity


class RunsParams(Params):
    model: str = "baseline"
    repeat_atol: float = Field(1e-5, ge=0, description="largest difference allowed between two runs of the same inputs")


class ModelParams(Params):
    model: str = "onnx"


class ParityParams(Params):
    reference: str = "source"
    model: str = "onnx"


class OnnxValidParams(Params):
    model: str = "onnx"
    min_opset: int = Field(17, ge=1)


class DerivedRuntimeParams(Params):
    model: str = "tensorrt"
    reference: str = "source"
    claim: str | None = Field(None, description="built only when the submission claims this key as true")
    batch: int = Field(1, ge=1, description="the batch size whose speedup is judged")
    min_speedup: float = Field(1.0, gt=0)
    speed_reference: str | None = Field(
        None,
        description="the role the engine is timed against (default: reference), e.g. the same ONNX file in "
        "ONNX Runtime's CUDA provider, so both run on the same GPU with device-resident inputs",
    )


def _probe(ctx: CheckContext, role: str) -> BatchProbe | None:
    return next((p for p in ctx.observations.probes if p.role == role), None)


def _probe_facts(probe: BatchProbe) -> dict[str, Any]:
    return {
        "batch_size": probe.batch_size,
        "fixed_batch": probe.fixed_batch,
        "single_shapes": probe.single_shapes,
        "batch_shapes": probe.batch_shapes,
        "repeat_max_abs_error": probe.repeat_max_abs_error,
        "error": probe.error,
        "outputs": [o.model_dump(exclude_none=True) for o in probe.outputs],
    }


@register("runs", RunsParams)
def runs(params: RunsParams, ctx: CheckContext) -> Outcome:
    """The declared inputs give outputs of one stable shape, and the same outputs twice."""
    role = params.model
    probe = _probe(ctx, role)
    if probe is None:
        return Outcome(None, f"Model '{role}' was not probed.")
    facts = _probe_facts(probe)
    if not probe.single_ok and not probe.batch_ok:
        return Outcome(0.0, f"'{role}' did not run on single samples or on a batch: {probe.error}.", facts)
    problems = []
    if probe.single_ok and not probe.single_shapes_stable:
        problems.append("its batch-1 outputs change shape from one sample to the next")
    if probe.single_ok and probe.batch_ok and not probe.shapes_consistent:
        problems.append(
            f"a batch of {probe.batch_size} gives outputs {probe.batch_shapes}, not "
            f"{probe.batch_size} stacked batch-1 outputs {probe.single_shapes}"
        )
    repeat_limit = params.repeat_atol
    if (probe.repeat_max_abs_error or 0.0) > repeat_limit:
        problems.append(
            f"the same inputs gave different outputs on a second run (max difference "
            f"{_fmt(probe.repeat_max_abs_error)}; dropout or random ops left in eval mode?)"
        )
    if problems:
        return Outcome(0.0, f"'{role}' runs, but " + "; ".join(problems) + ".", facts)
    shapes = probe.batch_shapes if probe.batch_ok else probe.single_shapes
    message = f"'{role}' gives outputs of stable shape {shapes} and the same outputs on a second run."
    if not probe.batch_ok:
        message += (
            f" Its batch size is fixed to {probe.fixed_batch or 1} in the file; that is fine here "
            "(hw6 asks for a dynamic batch axis)."
        )
    return Outcome(1.0, message, facts)


def _worst(outputs: list[OutputParity]) -> OutputParity | None:
    known = [o for o in outputs if o.tolerance_ratio is not None]
    if len(known) != len(outputs):
        return next(o for o in outputs if o.tolerance_ratio is None)
    return max(known, key=lambda o: o.tolerance_ratio or 0.0, default=None)


def _describe_outputs(outputs: list[OutputParity]) -> str:
    parts = []
    for o in outputs[:8]:
        if o.tolerance_ratio is None:
            parts.append(f"{o.name}: {o.note or 'not comparable'}")
        else:
            parts.append(f"{o.name}: max abs {_fmt(o.max_abs_error)}, max rel {_fmt(o.max_rel_error)}")
    return "; ".join(parts)


@register("dynamic_batch", ModelParams)
def dynamic_batch(params: ModelParams, ctx: CheckContext) -> Outcome:
    """Batch 1 and batch N both run, and every row of the batch equals the single run."""
    role = params.model
    probe = _probe(ctx, role)
    if probe is None:
        return Outcome(None, f"Model '{role}' was not probed.")
    facts = _probe_facts(probe)
    if not (probe.single_ok and probe.batch_ok):
        frozen = f" The file fixes the batch dimension to {probe.fixed_batch}." if probe.fixed_batch else ""
        return Outcome(
            0.0, f"'{role}' does not run at both batch 1 and batch {probe.batch_size}: {probe.error}.{frozen}", facts
        )
    if not probe.shapes_consistent:
        return Outcome(
            0.0,
            f"batch {probe.batch_size} gives outputs {probe.batch_shapes}, not "
            f"{probe.batch_size} stacked batch-1 outputs {probe.single_shapes}.",
            facts,
        )
    worst = _worst(probe.outputs)
    if worst is not None and (worst.tolerance_ratio is None or worst.tolerance_ratio > 1):
        return Outcome(
            0.0,
            f"batch {probe.batch_size} and batch 1 disagree beyond tolerance on "
            f"'{worst.name}' ({_describe_outputs(probe.outputs)}).",
            facts,
        )
    return Outcome(
        1.0, f"Batch 1 and batch {probe.batch_size} both run and agree ({_describe_outputs(probe.outputs)}).", facts
    )


def _comparison(ctx: CheckContext, reference: str, candidate: str) -> FidelityComparison | None:
    return next((f for f in ctx.observations.fidelity if f.reference == reference and f.candidate == candidate), None)


def parity_outcome(comparison: FidelityComparison) -> Outcome:
    """Every output within ``np.allclose(candidate, reference, rtol, atol)``; the report names the worst."""
    facts = {
        "atol": comparison.atol,
        "rtol": comparison.rtol,
        "samples": comparison.samples,
        "outputs": [o.model_dump(exclude_none=True) for o in comparison.outputs],
    }
    label = f"'{comparison.candidate}' against '{comparison.reference}' on {comparison.samples} samples"
    if comparison.note:
        return Outcome(0.0, f"{label}: {comparison.note}.", facts)
    worst = _worst(comparison.outputs)
    tolerance = f"atol {_fmt(comparison.atol)}, rtol {_fmt(comparison.rtol)}"
    if worst is None:
        return Outcome(0.0, f"{label}: no outputs to compare.", facts)
    if worst.tolerance_ratio is None or worst.tolerance_ratio > 1:
        over = f"{worst.tolerance_ratio:.3g}x the tolerance" if worst.tolerance_ratio else worst.note
        return Outcome(
            0.0,
            f"{label}: output '{worst.name}' is off by {over} ({tolerance}). Per output: "
            f"{_describe_outputs(comparison.outputs)}.",
            facts,
        )
    return Outcome(
        1.0, f"{label}: every output within {tolerance}. Per output: {_describe_outputs(comparison.outputs)}.", facts
    )


@register("parity", ParityParams)
def parity(params: ParityParams, ctx: CheckContext) -> Outcome:
    reference, candidate = params.reference, params.model
    comparison = _comparison(ctx, reference, candidate)
    if comparison is None:
        return Outcome(None, f"'{candidate}' was not compared with '{reference}'.")
    return parity_outcome(comparison)


@register("onnx_valid", OnnxValidParams)
def onnx_valid(params: OnnxValidParams, ctx: CheckContext) -> Outcome:
    """onnx.checker with the full check, strict shape inference, and an opset floor."""
    role = params.model
    model = ctx.observations.models.get(role)
    facts_model = model.evidence.onnx if model is not None else None
    if facts_model is None:
        return Outcome(0.0, f"'{role}' is not an ONNX file, so it cannot be checked as one.")
    min_opset = params.min_opset
    facts = facts_model.model_dump()
    problems = []
    if facts_model.checker_error:
        problems.append(f"onnx.checker rejects it: {facts_model.checker_error}")
    if facts_model.shape_inference_error:
        problems.append(
            f"strict shape inference fails (a declared shape or type disagrees with the graph): "
            f"{facts_model.shape_inference_error}"
        )
    if facts_model.opset is None or facts_model.opset < min_opset:
        problems.append(
            f"its default opset is {facts_model.opset}, below the required {min_opset} "
            f"(export with opset_version={min_opset} or later)"
        )
    if problems:
        only_opset = not facts_model.checker_error and not facts_model.shape_inference_error
        return Outcome(0.5 if only_opset else 0.0, "; ".join(problems) + ".", facts)
    return Outcome(
        1.0,
        f"onnx.checker (full check, strict shape inference) accepts it; opset "
        f"{facts_model.opset} (>= {min_opset}), IR version {facts_model.ir_version}.",
        facts,
    )


@register("derived_runtime", DerivedRuntimeParams)
def derived_runtime(params: DerivedRuntimeParams, ctx: CheckContext) -> Outcome:
    """An engine the grader built on this machine: built, matching the source, and faster.

    Without the runtime or a GPU the check is skipped and its points are pending, never failed.
    """
    role, reference = params.model, params.reference
    claim = params.claim
    if claim and ctx.submission.claims.get(claim) is not True:
        return Outcome(
            0.0,
            f"Not attempted: the submission does not ask for it. Add claims: {{{claim}: true}} to "
            "submission.yaml to have the grader build and test it on the GPU runner.",
        )
    status = next((d for d in ctx.observations.derived if d.role == role), None)
    if status is None:
        return Outcome(None, f"'{role}' was not built in this run.", pending=True)
    facts = status.model_dump(exclude_none=True)
    if status.status == "unavailable":
        return Outcome(None, f"Pending: {status.reason}.", facts, pending=True)
    if status.status == "failed":
        return Outcome(
            0.0,
            f"The grader could not build or run a {status.runtime} engine from '{status.source}': {status.reason}",
            facts,
        )
    comparison = _comparison(ctx, reference, role)
    if comparison is None:
        return Outcome(0.0, f"'{role}' was built but could not be compared with '{reference}'.", facts)
    matched = parity_outcome(comparison)
    facts.update(matched.evidence)
    timed_against = params.speed_reference or reference
    speed_key = f"{pair_key(timed_against, role)}.speedup_b{params.batch}"
    speedup = ctx.figures.get(speed_key)
    minimum = params.min_speedup
    facts[speed_key] = speedup.model_dump(exclude_none=True) if speedup else None
    built = f"Built with {status.runtime} {status.version} in {_fmt(status.build_s)} s ({status.reason})."
    if matched.fraction != 1.0:
        return Outcome(0.0, f"{built} {matched.message}", facts)
    partner = next((d for d in ctx.observations.derived if d.role == timed_against), None)
    if partner is not None and partner.status == "unavailable":  # it matches; only its speed waits
        return Outcome(None, f"{built} {matched.message} Pending: {partner.reason}.", facts, pending=True)
    best = None if speedup is None or speedup.value is None else (speedup.high or speedup.value)
    if best is None or best < minimum:
        return Outcome(
            0.5,
            f"{built} {matched.message} Speedup over '{timed_against}' "
            f"{_fmt(speedup.value if speedup else None)}x, needs >= {minimum:g}x.",
            facts,
        )
    return Outcome(1.0, f"{built} {matched.message} Speedup over '{timed_against}' {_fmt(speedup.value)}x.", facts)
