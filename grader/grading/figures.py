"""Flatten observations into named figures (``<role>.<name>`` and ``<cand>_vs_<ref>.<name>``).

Checks address figures by these names in ``assignment.yaml``, ``result.json`` stores them, and
reports and the gradebook read them, so the names are a contract: add, never rename.
"""

from __future__ import annotations

from grader.grading.evidence import effective_sparsity, palettized_bytes, summarize
from grader.contracts.observations import Estimate, FidelityComparison, Observations

MB = 1024 * 1024


def _e(value: float | None, unit: str = "") -> Estimate:
    return Estimate(value=value, unit=unit)


def pair_key(reference: str, candidate: str) -> str:
    return f"{candidate}_vs_{reference}"


def figures(obs: Observations) -> dict[str, Estimate]:
    out: dict[str, Estimate] = {}
    summaries = {role: summarize(m.evidence) for role, m in obs.models.items()}
    for role, model in obs.models.items():
        s = summaries[role]
        out[f"{role}.size_mb"] = _e(model.size_bytes / MB, "MiB")
        out[f"{role}.gzip_mb"] = _e(model.gzip_bytes / MB, "MiB")
        out[f"{role}.params"] = _e(float(s.params_total))
        out[f"{role}.quantized_fraction"] = _e(s.quantized_fraction)
        out[f"{role}.sparsity"] = _e(s.sparsity)
        out[f"{role}.peak_rss_mb"] = _e(model.peak_rss_mb, "MiB")
        out[f"{role}.accuracy"] = _e(model.accuracy)
        out[f"{role}.macs"] = _e(None if model.macs_per_sample is None else float(model.macs_per_sample))
        out[f"{role}.palettized_mb"] = _e(palettized_bytes(model.evidence) / MB, "MiB")
    for solo in obs.solo_timing:
        out[f"{solo.role}.latency_ms_b{solo.batch_size}"] = solo.latency_ms
        out[f"{solo.role}.throughput_b{solo.batch_size}"] = _e(solo.items_per_s, "items/s")
    heldout = {held.role: held.accuracy for held in obs.heldout}
    for role, accuracy in heldout.items():
        out[f"{role}.heldout_accuracy"] = _e(accuracy)
    for f in obs.fidelity:  # the final project's gate: the candidate's held-out accuracy over the reference's
        ref_acc, cand_acc = heldout.get(f.reference), heldout.get(f.candidate)
        if ref_acc and cand_acc is not None:
            out[f"{pair_key(f.reference, f.candidate)}.heldout_accuracy_ratio"] = _e(cand_acc / ref_acc)
    for t in obs.timing:
        out[f"{t.reference}.latency_ms_b{t.batch_size}"] = _e(t.reference_ms, "ms")
        out[f"{t.candidate}.latency_ms_b{t.batch_size}"] = _e(t.candidate_ms, "ms")
        out[f"{t.reference}.throughput_b{t.batch_size}"] = _e(t.reference_items_per_s, "items/s")
        out[f"{t.candidate}.throughput_b{t.batch_size}"] = _e(t.candidate_items_per_s, "items/s")
        out[f"{pair_key(t.reference, t.candidate)}.speedup_b{t.batch_size}"] = t.speedup
    for f in obs.fidelity:
        key = pair_key(f.reference, f.candidate)
        out[f"{key}.top1_agreement"] = _e(f.top1_agreement)
        out[f"{key}.snr_db"] = _e(f.snr_db, "dB")
        out[f"{key}.max_abs_error"] = _e(f.max_abs_error)
        out[f"{key}.kl_divergence"] = _e(f.kl_divergence, "nats")
        out.update(_parity_figures(key, f))
        if f.reference in obs.models and f.candidate in obs.models:  # built-here engines have no file
            out.update(_file_figures(key, obs, f.reference, f.candidate, summaries))
    return out


def _parity_figures(key: str, f: FidelityComparison) -> dict[str, Estimate]:
    """The worst output decides: the largest relative error and distance from ``allclose``."""
    if not f.outputs:
        return {}
    complete = all(o.tolerance_ratio is not None for o in f.outputs) and not f.note
    rel = [o.max_rel_error for o in f.outputs if o.max_rel_error is not None]
    return {
        f"{key}.tolerance_ratio": _e(max(o.tolerance_ratio for o in f.outputs) if complete else None),
        f"{key}.max_rel_error": _e(max(rel) if rel and complete else None),
    }


def _file_figures(key: str, obs: Observations, reference: str, candidate: str, summaries: dict) -> dict[str, Estimate]:
    ref, cand = obs.models[reference], obs.models[candidate]
    ref_s, cand_s = summaries[reference], summaries[candidate]
    drop = None if ref.accuracy is None or cand.accuracy is None else (ref.accuracy - cand.accuracy) * 100
    macs = None
    if ref.macs_per_sample and cand.macs_per_sample is not None:
        macs = cand.macs_per_sample / ref.macs_per_sample
    palettized = palettized_bytes(cand.evidence)
    return {
        f"{key}.size_ratio": _e(ref.size_bytes / max(cand.size_bytes, 1), "x"),
        f"{key}.gzip_ratio": _e(ref.gzip_bytes / max(cand.gzip_bytes, 1), "x"),
        f"{key}.palettized_ratio": _e(palettized_bytes(ref.evidence) / palettized if palettized else None, "x"),
        f"{key}.accuracy_drop_pts": _e(drop, "pts"),
        f"{key}.effective_sparsity": _e(effective_sparsity(cand_s, ref_s)),
        f"{key}.params_fraction": _e(cand_s.params_total / ref_s.params_total if ref_s.params_total else None),
        f"{key}.macs_fraction": _e(macs),
    }
