"""Figures by the names a person reads in a report: "peak memory", not ``peak_rss_mb``.

The figure keys stay what they are in ``result.json`` (tools and the gradebook read them); only
the report tables show these labels. A name with a batch suffix (``latency_ms_b64``) gets the
batch size spelled out.
"""

from __future__ import annotations

import re

LABELS = {
    "size_mb": "file size",
    "gzip_mb": "size after gzip",
    "palettized_mb": "palettized size (log2 k bits per weight)",
    "params": "parameters",
    "macs": "multiply-accumulates per sample",
    "peak_rss_mb": "peak memory",
    "gpu_peak_mb": "peak GPU memory",
    "transfer_ms": "copies to and from the GPU (not in the latency)",
    "accuracy": "accuracy on your inputs",
    "heldout_accuracy": "held-out accuracy",
    "latency_ms": "latency",
    "throughput": "throughput",
    "quantized_fraction": "weights stored as integers (share)",
    "sparsity": "weights that are exact zeros (share)",
    "speedup": "speedup",
    "size_ratio": "size reduction",
    "gzip_ratio": "size reduction after gzip",
    "palettized_ratio": "palettized size reduction",
    "top1_agreement": "top-1 agreement",
    "accuracy_drop_pts": "accuracy drop (points)",
    "heldout_accuracy_ratio": "held-out accuracy ratio",
    "effective_sparsity": "weights pruned (zeros or removed channels)",
    "params_fraction": "parameters, share of the reference's",
    "macs_fraction": "multiply-accumulates, share of the reference's",
    "snr_db": "signal-to-noise of the outputs (dB)",
    "kl_divergence": "KL divergence of the class probabilities",
    "max_abs_error": "largest absolute output difference",
    "max_rel_error": "largest relative output difference",
    "tolerance_ratio": "output difference / allowed (np.allclose, <= 1 passes)",
    "score": "leaderboard score",
}
BATCH = re.compile(r"^(?P<base>.+)_b(?P<batch>\d+)$")


def label(name: str) -> str:
    """The human name of a figure (the part after the role), or the name itself if none is known."""
    if name in LABELS:
        return LABELS[name]
    match = BATCH.match(name)
    if match and match["base"] in LABELS:
        return f"{LABELS[match['base']]}, batch {match['batch']}"
    return name.replace("_", " ")


def pair_label(key: str) -> str:
    """``candidate_vs_baseline.speedup_b64`` -> ``speedup, batch 64 (candidate vs baseline)``."""
    owner, _, name = key.partition(".")
    return f"{label(name)} ({owner.replace('_vs_', ' vs ')})" if "_vs_" in owner else label(key)
