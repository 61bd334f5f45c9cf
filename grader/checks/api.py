"""The public surface for an assignment's own ``checker.py``: everything a rule may use, and
nothing else (``grader assignments --validate`` refuses a checker that imports any other grader
module).

A checker registers rules with typed parameters and returns ``Outcome``s::

    from pydantic import Field
    from grader.checks.api import CheckContext, Outcome, Params, register

    class ClusteredParams(Params):
        model: str = "candidate"
        max_k: int = Field(32, ge=2)

    @register("clustered", ClusteredParams)
    def clustered(params: ClusteredParams, ctx: CheckContext) -> Outcome: ...
"""

from grader.checks.engine import CheckContext, NoParams, Outcome, Params, register
from grader.checks.pareto import dominates, dominators, give_benefit, pareto_front
from grader.checks.shared import favourable, figure_value, fmt, largest_float_weights, layer_sparsity, linear
from grader.config.assignment import ObjectiveSpec, SearchSpec
from grader.contracts.figures import EvidenceSummary, pair_key, role_key
from grader.contracts.observations import Estimate, ModelEvidence, TensorEvidence
from grader.contracts.result import Chart, ChartPoint, ChartSeries
from grader.contracts.searchlog import SearchLog, Trial

__all__ = [
    "Chart",
    "ChartPoint",
    "ChartSeries",
    "CheckContext",
    "Estimate",
    "EvidenceSummary",
    "ModelEvidence",
    "NoParams",
    "ObjectiveSpec",
    "Outcome",
    "Params",
    "SearchLog",
    "SearchSpec",
    "TensorEvidence",
    "Trial",
    "dominates",
    "dominators",
    "favourable",
    "figure_value",
    "fmt",
    "give_benefit",
    "largest_float_weights",
    "layer_sparsity",
    "linear",
    "pair_key",
    "pareto_front",
    "register",
    "role_key",
]
