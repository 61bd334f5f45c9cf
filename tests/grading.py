"""``grade`` as the tests call it: the real pipeline in the local sandbox (bubblewrap or unshare),
the same sandboxes ``grader check`` picks by default, with keyword overrides for the Docker ones.
"""

from __future__ import annotations

from pathlib import Path

from grader.contracts.result import RunContext
from grader.grading import pipeline
from grader.grading.pipeline import Grading
from grader.sandbox.base import Sandbox, Sandboxes, ServiceHost


def local_sandboxes() -> Sandboxes:
    """The local sandbox and service host (a module-level factory: a regrade's pool takes it along)."""
    from grader.sandbox.local import run_worker, start_early
    from grader.sandbox.service_local import LocalServiceHost

    return Sandboxes(run_worker, LocalServiceHost(), start_early)


def grade(
    folder: Path,
    root: Path | None = None,
    context: RunContext | None = None,
    *,
    runner: Sandbox | None = None,
    service_host: ServiceHost | None = None,
    store: Path | None = None,
) -> Grading:
    local = local_sandboxes()
    # a runner of the test's own is what runs the worker: no early start around it
    sandboxes = Sandboxes(runner or local.worker, service_host or local.services, None if runner else local.early)
    run_count = None
    if store is not None:
        from grader.records.runlimit import StoredRunCount

        run_count = StoredRunCount(store)
    return pipeline.grade(folder, sandboxes, root, context, run_count)


def judge(assignment, submission, observations, figures=None, files=None, keys=None) -> list:  # noqa: ANN001
    """The checks stage alone, on hand-built observations: figures derived as the pipeline derives
    them from the observations, the models' files and the answer keys (or the ``figures`` given),
    checks bound to their rules, then evaluated."""
    from grader.checks import CheckContext, evaluate, prepare
    from grader.grading.figures import model_figures

    derived = model_figures(observations, files or {}, keys, assignment.score)
    values = derived.values if figures is None else figures
    ctx = CheckContext(assignment, submission, observations, values, derived.summaries)
    return evaluate(prepare(assignment), ctx)
