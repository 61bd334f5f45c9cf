"""Check rules on hand-built observations: thresholds, intervals, claims, gates."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.checks.rules.compression import claimed_bits
from grader.checks.shared import favourable, linear
from grader.config.assignment import load_assignment
from grader.contracts.figures import AnswerKeys, ModelFiles
from grader.contracts.observations import (
    Estimate,
    FidelityComparison,
    ModelEvidence,
    ModelObservation,
    Observations,
    TensorEvidence,
    TimingComparison,
)
from grader.contracts.problem import Problem
from grader.contracts.result import CheckStatus
from grader.intake.manifest import parse_manifest
from tests.grading import judge

MANIFEST = """schema: 1
assignment: hw2-quantization-pruning
team: t
members: [octocat]
models: {baseline: b.onnx, candidate: c.onnx}
data: {inputs: i.npz}
claims: {quantization: int8, sparsity: %s}
"""


def weight(numel: int, zeros: int, quantized: bool, bits: int = 8, near: int = 0) -> TensorEvidence:
    return TensorEvidence(
        name="w",
        layer="Conv",
        stored_dtype=f"int{bits}" if quantized else "float32",
        bits=bits if quantized else 32,
        shape=[numel],
        numel=numel,
        zeros=zeros,
        near_zeros=near,
        distinct=10,
        quantized=quantized,
        prunable=True,
    )


SAMPLES = 200


def model(role: str, w: TensorEvidence, top1: list[int]) -> ModelObservation:
    return ModelObservation(
        role=role,
        path=f"{role}.onnx",
        format="onnx",
        evidence=ModelEvidence(format="onnx", params_total=w.numel, weights=[w]),
        top1=top1,
    )


def answers(cand_accuracy: float, agreement: float) -> tuple[list[int], list[int]]:
    """Baseline and candidate predictions on SAMPLES samples whose label is 0: the baseline is right
    on 97% of them; the candidate loses the candidate's share of those, then disagrees where needed."""
    baseline = [0] * 194 + [1] * 6
    candidate = list(baseline)
    lost = 194 - round(cand_accuracy * SAMPLES)
    for i in range(lost):
        candidate[i] = 2
    for i in range(194, 194 + max(0, round((1 - agreement) * SAMPLES) - lost)):
        candidate[i] = 2  # wrong either way, but no longer the baseline's answer
    return baseline, candidate


def observations(
    candidate: TensorEvidence, *, speedup: Estimate, agreement: float = 0.99, cand_accuracy: float = 0.965
) -> Observations:
    base_top1, cand_top1 = answers(cand_accuracy, agreement)
    return Observations(
        models={
            "baseline": model("baseline", weight(1000, 0, False), base_top1),
            "candidate": model("candidate", candidate, cand_top1),
        },
        fidelity=[
            FidelityComparison(
                reference="baseline",
                candidate="candidate",
                samples=SAMPLES,
                top1_agreement=None,
                snr_db=30.0,
                max_abs_error=0.1,
            )
        ],
        timing=[
            TimingComparison(
                reference="baseline",
                candidate="candidate",
                batch_size=64,
                threads=1,
                rounds=50,
                reference_ms=10,
                candidate_ms=10 / (speedup.value or 1),
                speedup=speedup,
                reference_items_per_s=6400,
                candidate_items_per_s=6400 * (speedup.value or 1),
            )
        ],
    )


FILES = {
    "baseline": ModelFiles({"baseline.onnx": 1000}, 1000, 1000),
    "candidate": ModelFiles({"candidate.onnx": 250}, 250, 250),
}
KEYS = AnswerKeys(team=[0] * SAMPLES)


def grade(obs: Observations, sparsity_claim: float = 0.5) -> dict:
    assignment = load_assignment("hw2-quantization-pruning")
    checks = judge(assignment, parse_manifest(MANIFEST % sparsity_claim), obs, files=FILES, keys=KEYS)
    return {c.id: c for c in checks}


GOOD = Estimate(value=2.0, low=1.8, high=2.2, unit="x")


def test_linear_and_favourable_bounds() -> None:
    assert linear(1.5, full=1.3, zero=1.0) == 1.0
    assert linear(1.0, full=1.3, zero=1.0) == 0.0
    assert linear(1.15, full=1.3, zero=1.0) == pytest.approx(0.5)
    assert favourable(Estimate(value=1.2, low=1.1, high=1.35), higher_is_better=True) == 1.35
    assert favourable(Estimate(value=1.2, low=1.1, high=1.35), higher_is_better=False) == 1.1
    assert claimed_bits("int8") == 8 and claimed_bits("INT4") == 4 and claimed_bits(True) is None


def test_a_good_submission_passes_everything() -> None:
    checks = grade(observations(weight(1000, 600, True), speedup=GOOD), sparsity_claim=0.6)
    assert {k: c.status for k, c in checks.items()} == {k: CheckStatus.PASS for k in checks}
    assert sum(c.points for c in checks.values()) == 100


def test_speedup_near_the_threshold_gets_the_benefit_of_the_interval() -> None:
    # median 1.25 is below full marks (1.3), but the interval reaches 1.32: noise must not cost points,
    # so two runs that straddle the threshold give the same verdict.
    runs = [Estimate(value=1.25, low=1.18, high=1.32, unit="x"), Estimate(value=1.31, low=1.24, high=1.38, unit="x")]
    verdicts = {grade(observations(weight(1000, 600, True), speedup=e), 0.6)["speedup"].status for e in runs}
    assert verdicts == {CheckStatus.PASS}


QDQ_OPS = {"QuantizeLinear": 4, "DequantizeLinear": 6, "Conv": 2, "Gemm": 1}
QOPERATOR_OPS = {"QuantizeLinear": 1, "QLinearConv": 2, "QLinearMatMul": 1, "DequantizeLinear": 1}


@pytest.mark.parametrize(
    "ops, said, not_said",
    [
        (QDQ_OPS, "in onnxruntime's QDQ format", "already uses int8 kernels"),
        (QOPERATOR_OPS, "quantize them as uint8 instead", "QDQ format"),
        ({"Conv": 2, "Gemm": 1}, "Time both files yourself", "QDQ format"),
    ],
    ids=["qdq", "qoperator", "float"],
)
def test_a_slower_candidate_gets_the_hint_that_fits_its_file(ops: dict, said: str, not_said: str) -> None:
    obs = observations(weight(1000, 600, True), speedup=Estimate(value=0.69, low=0.66, high=0.72))
    obs.models["candidate"].evidence.op_types = ops
    speedup = grade(obs)["speedup"]
    assert speedup.status is CheckStatus.FAIL and "0.69" in speedup.message
    assert said in speedup.message and not_said not in speedup.message


def test_a_fast_candidate_gets_no_hint() -> None:
    obs = observations(weight(1000, 600, True), speedup=GOOD)
    obs.models["candidate"].evidence.op_types = QDQ_OPS
    speedup = grade(obs)["speedup"]
    assert speedup.status is CheckStatus.PASS and "QDQ" not in speedup.message


def test_claiming_fewer_bits_than_stored_fails_quantized() -> None:
    obs = observations(weight(1000, 600, True, bits=8), speedup=GOOD)
    ctx_manifest = MANIFEST.replace("quantization: int8", "quantization: int4")
    assignment = load_assignment("hw2-quantization-pruning")
    checks = {c.id: c for c in judge(assignment, parse_manifest(ctx_manifest % 0.6), obs, files=FILES, keys=KEYS)}
    assert checks["quantized"].status is CheckStatus.FAIL
    assert "claimed 4-bit" in checks["quantized"].message


def test_overclaimed_sparsity_costs_points_even_above_the_minimum() -> None:
    pruned = grade(observations(weight(1000, 600, True), speedup=GOOD), sparsity_claim=0.8)["pruned"]
    assert pruned.status is CheckStatus.PARTIAL
    assert "You claimed 80%" in pruned.message


def test_a_failed_gate_skips_the_rest() -> None:
    obs = Observations(
        failure=Problem(
            kind="load", field="models.candidate", message="model 'candidate' failed to load", hint="Re-export it."
        )
    )
    checks = grade(obs)
    assert checks["loads"].status is CheckStatus.FAIL and "Re-export it." in checks["loads"].message
    assert all(c.status is CheckStatus.SKIPPED for k, c in checks.items() if k != "loads")
    assert sum(c.points for c in checks.values()) == 0


def test_accuracy_and_agreement_are_scored_on_the_host_from_the_predictions() -> None:
    """The worker reports each model's answers; the host scores them with the team's labels."""
    checks = grade(observations(weight(1000, 600, True), speedup=GOOD, cand_accuracy=0.80), 0.6)
    fidelity = checks["fidelity"]
    assert fidelity.status is CheckStatus.FAIL and "accuracy drop" in fidelity.message
    assert fidelity.evidence["candidate_vs_baseline.top1_agreement"]["value"] == pytest.approx(166 / 200)
    assert fidelity.evidence["candidate_vs_baseline.accuracy_drop_pts"]["value"] == pytest.approx(17.0)


def test_pending_and_bonus_points_stay_out_of_max_score() -> None:
    from grader.checks.engine import totals
    from grader.contracts.result import CheckResult

    def result(points: float, max_points: float, **flags) -> CheckResult:
        status = CheckStatus.SKIPPED if flags.get("pending") else CheckStatus.PASS
        return CheckResult(
            id=str(max_points), title="t", status=status, points=points, max_points=max_points, message="", **flags
        )

    checks = [result(50, 50), result(30, 35), result(0, 15, pending=True), result(10, 10, bonus=True)]
    assert totals(checks) == {"score": 90, "max_score": 85, "bonus_points": 10, "pending_points": 15}


def test_every_rule_that_can_leave_a_check_pending_is_known_to_the_publisher() -> None:
    """The engine and the publisher allow "pending" only for HARDWARE_RULES; a rule that returns a
    pending outcome and is missing there would turn a missing GPU into a lost check."""
    import ast

    from grader.config.assignment import HARDWARE_RULES

    pending_rules = set()
    for path in (Path(__file__).parent.parent / "grader/checks/rules").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            names = [
                d.args[0].value
                for d in node.decorator_list
                if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "register" and d.args
            ]
            marks = [
                k
                for call in ast.walk(node)
                if isinstance(call, ast.Call)
                for k in call.keywords
                if k.arg == "pending" and isinstance(k.value, ast.Constant) and k.value.value is True
            ]
            if names and marks:
                pending_rules.update(names)
    assert pending_rules and pending_rules <= HARDWARE_RULES, pending_rules - HARDWARE_RULES
