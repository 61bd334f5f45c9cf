"""Flatten observations into named figures (``<role>.<name>`` and ``<cand>_vs_<ref>.<name>``).

Checks address figures by these names in ``assignment.yaml``, ``result.json`` stores them, and
reports and the gradebook read them, so the names are a contract: add, never rename.
"""

from __future__ import annotations

from grader.evidence.summary import effective_sparsity, summarize
from grader.observations import Estimate, Observations

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
    for t in obs.timing:
        out[f"{t.reference}.latency_ms_b{t.batch_size}"] = _e(t.reference_ms, "ms")
        out[f"{t.candidate}.latency_ms_b{t.batch_size}"] = _e(t.candidate_ms, "ms")
        out[f"{t.reference}.throughput_b{t.batch_size}"] = _e(t.reference_items_per_s, "items/s")
        out[f"{t.candidate}.throughput_b{t.batch_size}"] = _e(t.candidate_items_per_s, "items/s")
        out[f"{pair_key(t.reference, t.candidate)}.speedup_b{t.batch_size}"] = t.speedup
    for f in obs.fidelity:
        key = pair_key(f.reference, f.candidate)
        ref, cand = obs.models[f.reference], obs.models[f.candidate]
        out[f"{key}.top1_agreement"] = _e(f.top1_agreement)
        out[f"{key}.snr_db"] = _e(f.snr_db, "dB")
        out[f"{key}.max_abs_error"] = _e(f.max_abs_error)
        out[f"{key}.size_ratio"] = _e(ref.size_bytes / max(cand.size_bytes, 1), "x")
        out[f"{key}.gzip_ratio"] = _e(ref.gzip_bytes / max(cand.gzip_bytes, 1), "x")
        drop = None if ref.accuracy is None or cand.accuracy is None else (ref.accuracy - cand.accuracy) * 100
        out[f"{key}.accuracy_drop_pts"] = _e(drop, "pts")
        out[f"{key}.effective_sparsity"] = _e(effective_sparsity(summaries[f.candidate], summaries[f.reference]))
    return out
