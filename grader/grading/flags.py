"""What staff should look at in a grading: facts no check scores, but that honest compression
does not produce.

A flag never changes a score; it is shown in the report (so the student sees what staff will)
and kept in ``result.json`` for the grade tables. Flags come from the worker's evidence (weights
computed from the inputs, control flow), from timing (answers that changed while the clock ran)
and from comparing figures: a speedup far beyond what the file's evidence can explain, or a
model in which no parameter was found at all.
"""

from __future__ import annotations

from grader.contracts.figures import EvidenceSummary
from grader.contracts.observations import Observations, TimingComparison

FLAG_CHARS = 400
EXPLAINED_SLACK = 4.0  # a speedup this many times beyond the evidence's account is flagged
QUANTIZED_GAIN = 4.0  # int8 arithmetic against fp32, at best
SPARSE_GAIN_CAP = 4.0


def staff_flags(obs: Observations, summaries: dict[str, EvidenceSummary]) -> list[str]:
    flags: list[str] = []
    for role, model in obs.models.items():
        if model.trusted:
            continue
        flags += [f"'{role}': {flag}" for flag in model.evidence.flags]
        if summaries[role].params_total == 0:
            flags.append(
                f"'{role}': no parameters were found in the file, so nothing it computes with was inspected "
                "(weights stored in a form the grader does not read, or none at all)"
            )
    for timing in [*obs.timing, *obs.solo_timing]:
        flags += [c.note for c in timing.timed_outputs if not c.consistent and c.note]
    for timing in obs.timing:
        flag = _unexplained_speedup(timing, obs, summaries)
        if flag:
            flags.append(flag)
    # a flag can quote names from the student's file: bounded here, where every flag enters the result
    return [f if len(f) <= FLAG_CHARS else f[: FLAG_CHARS - 1] + "…" for f in dict.fromkeys(flags)][:50]


def explained_speedup(
    obs: Observations, summaries: dict[str, EvidenceSummary], reference: str, candidate: str
) -> float:
    """The most speedup the evidence can account for: less work (MACs, else parameters), integer
    arithmetic, and zeros a sparse kernel could skip."""
    ref, cand = obs.models.get(reference), obs.models.get(candidate)
    if ref is None or cand is None:
        return float("inf")  # an engine built here has no evidence to hold its speed against
    if ref.macs_per_sample and cand.macs_per_sample:
        work = ref.macs_per_sample / cand.macs_per_sample
    elif summaries[reference].params_total and summaries[candidate].params_total:
        work = summaries[reference].params_total / summaries[candidate].params_total
    else:
        work = 1.0
    quantized = QUANTIZED_GAIN if summaries[candidate].quantized_fraction > 0.5 else 1.0
    sparse = min(1.0 / max(1.0 - summaries[candidate].sparsity, 1e-9), SPARSE_GAIN_CAP)
    return max(work, 1.0) * quantized * sparse


def _unexplained_speedup(timing: TimingComparison, obs: Observations, summaries: dict[str, EvidenceSummary]) -> str:
    low = timing.speedup.low if timing.speedup.low is not None else timing.speedup.value
    if low is None:
        return ""
    bound = explained_speedup(obs, summaries, timing.reference, timing.candidate)
    if low <= EXPLAINED_SLACK * bound:
        return ""
    return (
        f"'{timing.candidate}' ran {low:.1f}x faster than '{timing.reference}' at batch {timing.batch_size} (low end "
        f"of the interval), far beyond the {bound:.1f}x its evidence explains (work, integer weights, zeros)"
    )
