"""Every figure a grading reports, derived once from what was observed, and named once.

Checks read these figures by name (``grader.contracts.figures`` says how names are built),
``result.json`` stores them, reports and the gradebook show them. Model figures come from the
worker's ``Observations``; service figures from the load test's ``LevelStats``. Evidence
summaries (quantized share, sparsity, palettized size) are derived here too, from
``ModelEvidence`` alone, so every assignment computes them the same way from the same evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from grader.config.scoring import ScoreFormula
from grader.contracts.figures import MB, SCORE_FIGURE, AnswerKeys, EvidenceSummary, ModelFiles, pair_key
from grader.contracts.observations import (
    PALETTE_MAX,
    Estimate,
    FidelityComparison,
    ModelEvidence,
    ModelObservation,
    Observations,
    TensorEvidence,
    TimedOutputs,
    TimingComparison,
)
from grader.grading.flags import staff_flags
from grader.grading.loadgen import LevelStats

CODEBOOK_ENTRY_BITS = 32
VALUES_NOTE = "the outputs are values, not [N, classes] scores: judged by SNR instead"


@dataclass(frozen=True)
class Figures:
    """The named figures of one grading, and each model's evidence summary."""

    values: dict[str, Estimate]
    summaries: dict[str, EvidenceSummary] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)  # for staff (``grader.grading.flags``), never scored


def _e(value: float | None, unit: str = "", note: str = "", pending: bool = False) -> Estimate:
    return Estimate(value=value, unit=unit, note=note[:1000], pending=pending and value is None)


# --------------------------------------------------------------------------- evidence summaries


def summarize(evidence: ModelEvidence) -> EvidenceSummary:
    weights = evidence.weights
    quantized = [w for w in weights if w.quantized]
    prunable = [w for w in weights if w.prunable]
    return EvidenceSummary(
        weight_elements=sum(w.numel for w in weights),
        quantized_elements=sum(w.numel for w in quantized),
        min_quantized_bits=min((w.bits for w in quantized), default=None),
        prunable_elements=sum(w.numel for w in prunable),
        prunable_zeros=sum(w.zeros for w in prunable),
        prunable_near_zeros=sum(w.near_zeros for w in prunable),
        params_total=evidence.params_total,
    )


def effective_sparsity(candidate: EvidenceSummary, baseline: EvidenceSummary | None, maps: bool = True) -> float:
    """Share of the baseline's prunable weights that are gone: zeroed, or removed outright.

    Structured pruning (fewer channels) shrinks the tensors instead of zeroing them, so measuring
    against the baseline's element count credits both kinds the same way, but only when the
    candidate's layers map onto the baseline's (``layers_map``): a different, smaller network has
    removed nothing, and only its own zeros count.
    """
    total = max(baseline.prunable_elements if baseline and maps else 0, candidate.prunable_elements)
    if not total:
        return 0.0
    return 1.0 - candidate.prunable_nonzeros / total


LAYER_FAMILIES = {
    "conv": {"Conv", "QLinearConv", "ConvInteger", "conv1d", "conv2d", "conv3d", "convolution"},
    "conv_transpose": {"ConvTranspose", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"},
    "matmul": {
        "Gemm",
        "MatMul",
        "QLinearMatMul",
        "MatMulInteger",
        "QGemm",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "MatMulNBits",
        "linear",
        "addmm",
        "mm",
        "matmul",
        "bmm",
    },
    "recurrent": {"LSTM", "GRU", "RNN"},
}


def _family(layer: str) -> str:
    op = layer.split(" ")[0]
    return next((family for family, ops in LAYER_FAMILIES.items() if op in ops), op)


def layers_map(candidate: ModelEvidence, baseline: ModelEvidence) -> str:
    """ "" when every prunable layer of the candidate is one of the baseline's with fewer channels
    (the same kind of op, in the same order, each dimension at most the baseline's); otherwise
    why not. Dimensions are compared sorted, so a weight stored transposed (Gemm's ``[N, K]``
    against MatMul's ``[K, N]``, MatMulNBits' decoded ``[N, K]``) still maps."""
    mine = [w for w in candidate.weights if w.prunable]
    theirs = [w for w in baseline.weights if w.prunable]
    kinds = [_family(w.layer) for w in mine], [_family(w.layer) for w in theirs]
    if kinds[0] != kinds[1]:
        return (
            f"its {len(mine)} prunable layers ({', '.join(kinds[0][:6])}) are not the baseline's "
            f"{len(theirs)} ({', '.join(kinds[1][:6])})"
        )
    for a, b in zip(mine, theirs):
        if len(a.shape) != len(b.shape) or any(x > y for x, y in zip(sorted(a.shape), sorted(b.shape))):
            return f"layer '{a.name}' {a.shape} is not the baseline's '{b.name}' {b.shape} with fewer channels"
    return ""


def tensor_palettized_bits(weight: TensorEvidence) -> int:
    """Bits to store a tensor as indices into a codebook of its distinct values (log2 k each + the
    codebook), when that is smaller than storing it as it is; otherwise its stored bits."""
    stored = weight.numel * weight.bits
    if not 0 < weight.distinct <= PALETTE_MAX:
        return stored
    index_bits = max(1, math.ceil(math.log2(weight.distinct)))
    return min(stored, weight.numel * index_bits + weight.distinct * CODEBOOK_ENTRY_BITS)


def palettized_bytes(evidence: ModelEvidence) -> float:
    """Size of the model with every weight tensor palettized, and every other parameter at 32 bits.

    A format-independent figure for weight clustering (hw3): what the file would weigh if each
    clustered tensor were stored as log2(k)-bit indices plus a k-entry fp32 codebook.
    """
    weight_elements = sum(w.numel for w in evidence.weights)
    bits = sum(tensor_palettized_bits(w) for w in evidence.weights)
    bits += max(evidence.params_total - weight_elements, 0) * CODEBOOK_ENTRY_BITS
    return bits / 8


# --------------------------------------------------------------------------- model figures


def model_figures(
    obs: Observations, files: dict[str, ModelFiles], keys: AnswerKeys | None = None, score: ScoreFormula | None = None
) -> Figures:
    """Every figure of a model grading. ``files`` are the models' files as the host measured them;
    ``keys`` the labels the host scores the worker's predictions with (the worker reports answers,
    never scores); with ``score``, the leaderboard score over the figures."""
    keys = keys or AnswerKeys()
    accuracies = {role: accuracy(m.top1, keys.team) for role, m in obs.models.items()}
    summaries = {role: summarize(m.evidence) for role, m in obs.models.items()}
    out: dict[str, Estimate] = {}
    for role, model in obs.models.items():
        s = summaries[role]
        if role in files:
            out[f"{role}.size_mb"] = _e(files[role].size_bytes / MB, "MiB")
            out[f"{role}.gzip_mb"] = _e(files[role].gzip_bytes / MB, "MiB")
        out[f"{role}.params"] = _e(float(s.params_total))
        out[f"{role}.quantized_fraction"] = _e(s.quantized_fraction)
        out[f"{role}.sparsity"] = _e(s.sparsity)
        out[f"{role}.peak_rss_mb"] = _e(model.peak_rss_mb, "MiB")
        if model.device == "cuda" or obs.environment.device_pending:
            out[f"{role}.gpu_peak_mb"] = _gpu_memory(model, obs)
        out[f"{role}.accuracy"] = _e(accuracies[role], note=accuracy_note(role, model.top1, keys.team, "inputs.npz"))
        out[f"{role}.macs"] = _e(None if model.macs_per_sample is None else float(model.macs_per_sample))
        out[f"{role}.palettized_mb"] = _e(palettized_bytes(model.evidence) / MB, "MiB")
    for solo in obs.solo_timing:
        doubt = _timing_doubt(solo.timed_outputs)
        b = solo.batch_size
        pending = solo.latency_ms.pending
        out[f"{solo.role}.latency_ms_b{b}"] = _e(None, "ms", doubt) if doubt else solo.latency_ms
        out[f"{solo.role}.throughput_b{b}"] = _e(
            None if doubt else solo.items_per_s, "items/s", doubt or solo.note, pending
        )
        if solo.transfer_ms is not None:
            out[f"{solo.role}.transfer_ms_b{b}"] = _e(solo.transfer_ms, "ms", TRANSFER_NOTE)
    heldout = {held.role: accuracy(held.top1, keys.heldout) for held in obs.heldout}
    for held in obs.heldout:
        why = held.error or accuracy_note(held.role, held.top1, keys.heldout, "the course's held-out data")
        out[f"{held.role}.heldout_accuracy"] = _e(heldout[held.role], note=why)
    for f in obs.fidelity:  # the final project's gate: the candidate's held-out accuracy over the reference's
        ref_acc, cand_acc = heldout.get(f.reference), heldout.get(f.candidate)
        if ref_acc and cand_acc is not None:
            out[f"{pair_key(f.reference, f.candidate)}.heldout_accuracy_ratio"] = _e(cand_acc / ref_acc)
    for t in obs.timing:
        out.update(_timing_figures(t))
    for f in obs.fidelity:
        key = pair_key(f.reference, f.candidate)
        values_note = VALUES_NOTE if f.output_kind == "values" else f.note
        out[f"{key}.top1_agreement"] = _e(_agreement(obs, f), note=values_note)
        out[f"{key}.snr_db"] = _e(f.snr_db, "dB", f.note)
        out[f"{key}.max_abs_error"] = _e(f.max_abs_error, note=f.note)
        out[f"{key}.kl_divergence"] = _e(f.kl_divergence, "nats", values_note)
        out.update(_parity_figures(key, f))
        if f.reference in obs.models and f.candidate in obs.models:  # built-here engines have no file
            out.update(_file_figures(key, obs, files, keys, (f.reference, f.candidate), summaries, accuracies))
    values = _believed_pending(_with_score(out, score, obs.failure is None), obs)
    return Figures(values, summaries, staff_flags(obs, summaries))


def _believed_pending(values: dict[str, Estimate], obs: Observations) -> dict[str, Estimate]:
    """A figure waits for the GPU runner only when it has no value and the worker could not use the
    GPU the assignment names (the host refuses that claim where it passed the worker a GPU); any
    other "pending" a worker reports is dropped, so the check judges the figure as it is."""
    return {
        name: figure.model_copy(update={"pending": False})
        if figure.pending and (figure.value is not None or not obs.environment.device_pending)
        else figure
        for name, figure in values.items()
    }


def accuracy(predictions: list[int] | None, labels: list[int] | None) -> float | None:
    """Top-1 accuracy, scored here from the worker's predictions; ``None`` unless there is one
    prediction per label."""
    if predictions is None or labels is None or len(predictions) != len(labels) or not labels:
        return None
    return sum(p == y for p, y in zip(predictions, labels)) / len(labels)


def accuracy_note(role: str, predictions: list[int] | None, labels: list[int] | None, source: str) -> str:
    """Why a model has no accuracy: no labels, no class scores, or not one answer per label."""
    if labels is None:
        return f"{source} has no 'labels' array (one class id per sample), so accuracy cannot be scored"
    if predictions is None:
        return f"'{role}' does not output [N, classes] scores, so it has no top-1 answers to score"
    if len(predictions) != len(labels):
        return f"'{role}' gave {len(predictions)} answers for {len(labels)} labels"
    return ""


def _agreement(obs: Observations, f: FidelityComparison) -> float | None:
    """Top-1 agreement from both models' predictions where the host has them (the worker's own
    figure otherwise, for an engine built in the sandbox); none for value outputs."""
    if f.output_kind == "values":
        return None
    ref, cand = obs.models.get(f.reference), obs.models.get(f.candidate)
    if ref is not None and cand is not None and ref.top1 is not None and cand.top1 is not None:
        if len(ref.top1) == len(cand.top1) and ref.top1:
            return sum(a == b for a, b in zip(ref.top1, cand.top1)) / len(ref.top1)
        return None
    return f.top1_agreement


def _timing_doubt(checked: list[TimedOutputs]) -> str:
    """Why a timing is not believed: a model answered differently while it was timed."""
    return "; ".join(c.note for c in checked if not c.consistent)


def _timing_figures(t: TimingComparison) -> dict[str, Estimate]:
    b, why = t.batch_size, _timing_doubt(t.timed_outputs) or t.note
    doubted = bool(_timing_doubt(t.timed_outputs))
    speedup = _e(None, "x", why) if doubted else t.speedup
    pending = t.speedup.pending
    out = {
        f"{t.reference}.latency_ms_b{b}": _e(None if doubted else t.reference_ms, "ms", why, pending),
        f"{t.candidate}.latency_ms_b{b}": _e(None if doubted else t.candidate_ms, "ms", why, pending),
        f"{t.reference}.throughput_b{b}": _e(None if doubted else t.reference_items_per_s, "items/s", why, pending),
        f"{t.candidate}.throughput_b{b}": _e(None if doubted else t.candidate_items_per_s, "items/s", why, pending),
        f"{pair_key(t.reference, t.candidate)}.speedup_b{b}": speedup,
    }
    for role, transfer in ((t.reference, t.reference_transfer_ms), (t.candidate, t.candidate_transfer_ms)):
        if transfer is not None:
            out[f"{role}.transfer_ms_b{b}"] = _e(transfer, "ms", TRANSFER_NOTE)
    return out


TRANSFER_NOTE = "inputs to the GPU and outputs back, per batch: timed apart, not in the latency"


def _gpu_memory(model: ModelObservation, obs: Observations) -> Estimate:
    if model.gpu_peak_mb is not None:
        return _e(model.gpu_peak_mb, "MiB", model.gpu_memory_note)
    if obs.environment.device_pending:
        return _e(None, "MiB", f"measured on CUDA; {obs.environment.device_reason}", pending=True)
    return _e(None, "MiB", model.gpu_memory_note)


def _with_score(values: dict[str, Estimate], score: ScoreFormula | None, complete: bool) -> dict[str, Estimate]:
    if score is None or not complete:
        return values
    return {**values, SCORE_FIGURE: score.evaluate(values)}


def _parity_figures(key: str, f: FidelityComparison) -> dict[str, Estimate]:
    """The worst output decides: the largest relative error and distance from ``allclose``."""
    if not f.outputs:
        return {}
    complete = all(o.tolerance_ratio is not None for o in f.outputs) and not f.note
    rel = [o.max_rel_error for o in f.outputs if o.max_rel_error is not None]
    why = f.note or "; ".join(f"{o.name}: {o.note}" for o in f.outputs if o.tolerance_ratio is None and o.note)
    return {
        f"{key}.tolerance_ratio": _e(max(o.tolerance_ratio for o in f.outputs) if complete else None, note=why),
        f"{key}.max_rel_error": _e(max(rel) if rel and complete else None, note=why),
    }


def _file_figures(
    key: str,
    obs: Observations,
    files: dict[str, ModelFiles],
    keys: AnswerKeys,
    roles: tuple[str, str],
    summaries: dict[str, EvidenceSummary],
    accuracies: dict[str, float | None],
) -> dict[str, Estimate]:
    reference, candidate = roles
    ref, cand = obs.models[reference], obs.models[candidate]
    ref_s, cand_s = summaries[reference], summaries[candidate]
    unmapped = layers_map(cand.evidence, ref.evidence)
    removal_note = (
        f"removed channels are not credited: {unmapped}; only the candidate's own exact zeros count" if unmapped else ""
    )
    ref_acc, cand_acc = accuracies[reference], accuracies[candidate]
    drop = None if ref_acc is None or cand_acc is None else (ref_acc - cand_acc) * 100
    drop_note = (
        ""
        if drop is not None
        else "; ".join(
            n
            for n in (
                accuracy_note(reference, ref.top1, keys.team, "inputs.npz"),
                accuracy_note(candidate, cand.top1, keys.team, "inputs.npz"),
            )
            if n
        )
    )
    macs = None
    if ref.macs_per_sample and cand.macs_per_sample is not None:
        macs = cand.macs_per_sample / ref.macs_per_sample
    palettized = palettized_bytes(cand.evidence)
    return {
        **_size_ratios(key, files.get(reference), files.get(candidate)),
        f"{key}.palettized_ratio": _e(palettized_bytes(ref.evidence) / palettized if palettized else None, "x"),
        f"{key}.accuracy_drop_pts": _e(drop, "pts", drop_note),
        f"{key}.effective_sparsity": _e(effective_sparsity(cand_s, ref_s, not unmapped), note=removal_note),
        f"{key}.params_fraction": _e(
            cand_s.params_total / ref_s.params_total if ref_s.params_total else None,
            note="" if ref_s.params_total else f"no parameters were found in '{reference}'",
        ),
        f"{key}.macs_fraction": _e(macs, note="" if macs is not None else (cand.macs_note or ref.macs_note)),
    }


def _size_ratios(key: str, ref: ModelFiles | None, cand: ModelFiles | None) -> dict[str, Estimate]:
    if ref is None or cand is None:
        return {}
    return {
        f"{key}.size_ratio": _e(ref.size_bytes / max(cand.size_bytes, 1), "x"),
        f"{key}.gzip_ratio": _e(ref.gzip_bytes / max(cand.gzip_bytes, 1), "x"),
    }


# --------------------------------------------------------------------------- service figures


@dataclass(frozen=True)
class ServiceLoad:
    """One service's load test: every concurrency level, and how long it took to become healthy."""

    levels: list[LevelStats]
    startup_s: float


def service_figures(
    team: ServiceLoad | None, reference: ServiceLoad | None, score: ScoreFormula | None = None, complete: bool = True
) -> Figures:
    """The service track's figures: each service's, and the team's throughput over the reference's."""
    out: dict[str, Estimate] = {}
    for prefix, load in (("service", team), ("reference_service", reference)):
        if load is not None:
            out.update(_load_figures(prefix, load))
    if team is not None and reference is not None:
        ratio = out["service.best_throughput"].value / max(out["reference_service.best_throughput"].value or 0, 1e-9)
        out[f"{pair_key('reference_service', 'service')}.throughput_ratio"] = _e(ratio, "x")
    return Figures(_with_score(out, score, complete))


def _load_figures(prefix: str, load: ServiceLoad) -> dict[str, Estimate]:
    levels = load.levels
    out: dict[str, Estimate] = {f"{prefix}.startup_s": _e(load.startup_s, "s")}
    requests = sum(s.requests for s in levels)
    answered = sum(s.answered for s in levels)
    ok = sum(s.ok for s in levels)
    labelled = sum(s.labelled for s in levels)
    out[f"{prefix}.requests"] = _e(float(requests))
    out[f"{prefix}.error_rate"] = _e((requests - answered) / requests if requests else 1.0)
    out[f"{prefix}.agreement"] = _e(ok / answered if answered else 0.0)
    out[f"{prefix}.accuracy"] = _e(sum(s.correct_labels for s in levels) / labelled if labelled else None)
    for s in levels:
        out[f"{prefix}.throughput_c{s.concurrency}"] = _e(s.throughput, "req/s")
        for q in (50, 90, 99):
            out[f"{prefix}.p{q}_ms_c{s.concurrency}"] = _e(s.percentile_ms(q), "ms")
    out[f"{prefix}.best_throughput"] = _e(max((s.throughput for s in levels), default=0.0), "req/s")
    return out
