"""hw3's own rule: every clustered tensor holds at most k distinct values, counted exactly.

The counting is the shared evidence (``TensorEvidence.distinct``: exact distinct stored values);
this rule only decides which tensors must be clustered and phrases the verdict. Values that
differ only by float noise are never merged: 4,096 values that sit within 1e-6 of 16 centres
are 4,096 values. The evidence's noise-tolerant count only explains the failure.
"""

from __future__ import annotations

from pydantic import Field

from grader.checks.api import CheckContext, Outcome, Params, linear, register


class ClusteredParams(Params):
    model: str = "candidate"
    claim: str = Field("clusters", description="the claim key stating k, the clusters per tensor")
    min_elements: int = Field(1024, ge=1, description="tensors with fewer elements need not be clustered")
    max_k: int = Field(32, ge=2, description="the most clusters a team may claim")
    zero: float = Field(0.5, ge=0, le=1, description="share of compliant elements that scores nothing")


def _claimed_k(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        return None
    return int(value)


@register("clustered", ClusteredParams)
def clustered(params: ClusteredParams, ctx: CheckContext) -> Outcome:
    role = params.model
    claim_key = params.claim
    floor, max_k = params.min_elements, params.max_k
    k = _claimed_k(ctx.submission.claims.get(claim_key))
    if k is None or k < 2:
        return Outcome(
            0.0,
            f"Claim the number of clusters per tensor: claims: {{{claim_key}: 16}} in submission.yaml "
            f"(an integer from 2 to {max_k}).",
        )
    if k > max_k:
        return Outcome(0.0, f"You claimed {k} clusters; this assignment allows at most {max_k}.")
    weights = ctx.observations.models[role].evidence.weights
    tensors = [w for w in weights if w.prunable and w.numel >= floor]
    all_elements = sum(w.numel for w in weights)
    if not tensors:
        return Outcome(
            0.0, f"No conv / linear / matmul weight has {floor:,} or more elements, so nothing was clustered."
        )
    over = sorted((w for w in tensors if w.distinct < 0 or w.distinct > k), key=lambda w: w.numel, reverse=True)
    elements = sum(w.numel for w in tensors)
    compliant = elements - sum(w.numel for w in over)
    facts = {
        "claimed_k": k,
        "tensors_checked": len(tensors),
        "covered_fraction": round(elements / all_elements, 4) if all_elements else 0.0,
        "compliant_fraction": round(compliant / elements, 4),
        "tensors": [
            {"name": w.name, "numel": w.numel, "distinct": w.distinct, "distinct_within_noise": w.distinct_within_noise}
            for w in tensors
        ][:50],
    }
    covered = (
        f"{len(tensors)} weight tensor(s) with >= {floor:,} elements ({facts['covered_fraction']:.1%} of all "
        "weight elements)"
    )
    if not over:
        return Outcome(
            1.0,
            f"{covered}: each holds at most {k} distinct values (largest count {max(w.distinct for w in tensors)}).",
            facts,
        )
    details = []
    for w in over[:5]:
        text = f"{w.name} has {'too many to count' if w.distinct < 0 else f'{w.distinct:,}'} distinct values"
        if w.distinct_within_noise is not None and w.distinct_within_noise <= k:
            text += (
                f" (only {w.distinct_within_noise} once differences below 1e-5 of its largest weight are "
                "ignored: float noise around the centroids; store each weight exactly as its centroid)"
            )
        details.append(text)
    score = min(linear(compliant / elements, 1.0, params.zero), 0.99)
    return Outcome(
        score, f"{covered}: {len(over)} hold more than the claimed {k} distinct values: {'; '.join(details)}.", facts
    )
