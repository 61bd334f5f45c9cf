"""The worker's evidence held against what the host read from the files itself.

Evidence comes from inside the sandbox; a file that managed to run code there could report any
of it. The host cannot decode weights without running them, but it knows from each file's
metadata which tensors it stores, as what type, and how many elements
(``grader.intake.stored``), and every claim that can be held against that is: a weight must be a
tensor the file stores, a quantized one must be stored as integers of <= 8 bits (at no fewer bits
than the evidence says), and a model cannot have more parameters than its file holds. A
contradiction means the report is not the file's: the submission is refused and staff are told.
"""

from __future__ import annotations

from grader.contracts.observations import Observations
from grader.contracts.problem import Problem, model_field
from grader.intake.stored import StoredTensor

PACKING = 8  # codes per stored element at most (1-bit codes in a uint8); plus a margin of two


def contradictions(obs: Observations, stored: dict[str, dict[str, list]]) -> list[Problem]:
    """Problems for each model whose evidence the file's own metadata contradicts."""
    problems = []
    for role, model in obs.models.items():
        facts = {name: StoredTensor.from_json(item) for name, item in stored.get(role, {}).items()}
        if model.trusted or not facts:
            continue
        reason = _contradiction(model.evidence.weights, model.evidence.params_total, facts)
        if reason:
            problems.append(
                Problem(
                    kind="evidence",
                    field=model_field(role),
                    message=f"what was reported from inside the sandbox about model '{role}' contradicts the "
                    f"file itself ({reason}); the grader does not grade a file that changes its own report",
                    hint="Submit the model as the framework's exporter wrote it. If you did, tell the course "
                    "staff: this is flagged for them.",
                )
            )
    return problems


def _contradiction(weights: list, params_total: int, facts: dict[str, StoredTensor]) -> str:
    for w in weights:
        fact = facts.get(w.name)
        if fact is None:
            return f"weight '{w.name[:80]}' is not a tensor the file stores"
        if w.quantized and not fact.low_bit:
            return f"'{w.name[:80]}' is read as {w.bits}-bit integers but stored as {fact.dtype}"
        if w.quantized and fact.numel * PACKING * 2 < w.numel:
            return f"'{w.name[:80]}' has {w.numel:,} values but the file stores {fact.numel:,}"
        if w.quantized and w.bits < fact.bits and fact.dtype != "uint8":  # uint8 may pack 4- or 2-bit codes
            return f"'{w.name[:80]}' is read as {w.bits}-bit codes but stored as {fact.dtype}"
    capacity = sum(f.numel for f in facts.values()) * PACKING
    if params_total > capacity + 16:
        return f"{params_total:,} parameters, but the file stores {capacity // PACKING:,} values"
    return ""
