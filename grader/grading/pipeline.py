"""The host pipeline: one submission folder in, one ``Result`` out, as a visible list of stages.

=========== ===================================== ===========================================
stage       done by                               hands on
=========== ===================================== ===========================================
manifest    ``intake.manifest.load_manifest``     submission.yaml, validated
assignment  ``config.assignment`` + ``checks``    assignment.yaml, its checker, checks bound
                                                  to rules with typed parameters
run limit   ``config.policy.limit_reached``       refusal before anything runs (if limited)
vetting     ``intake.submission``                 every file vetted; nothing has read it yet
job         ``build_job`` (here)                  what the worker loads and measures, by folder
worker      the ``Sandbox`` (chosen by commands)  ``Observations``, validated as untrusted
figures     ``grading.figures``                   every named figure, derived once
checks      ``checks.evaluate``                   status, points, a message with the fix
result      ``Result`` (here)                     result.json, built once
=========== ===================================== ===========================================

Each stage hands the next only its output. Whatever happens, a ``Result`` comes back: a student's
mistake becomes ``rejected`` with problems that say what to fix, the grader's own fault ``error``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from grader import __version__, exitcodes
from grader.checks import BoundCheck, CheckContext, evaluate, load_checker, prepare, skipped_all, totals
from grader.checks.decisions import timing_decisions
from grader.config.assignment import Assignment, load_assignment
from grader.config.heldout import evaluation_file
from grader.config.paths import assignments_root, references_root
from grader.config.policy import limit_reached
from grader.contracts.figures import AnswerKeys, ModelFiles
from grader.contracts.job import FileRef, Job, ModelJob, SearchLogJob
from grader.contracts.observations import Environment, Observations
from grader.contracts.problem import Problem
from grader.contracts.result import AssignmentRef, CheckResult, GraderRef, Result, RunContext, SubmissionRef
from grader.errors import ConfigError, SubmissionError
from grader.grading.crosscheck import contradictions
from grader.grading.figures import Figures, model_figures, service_figures
from grader.intake.artifacts import Artifact, sha256_file, stage
from grader.intake.isolated import vet_isolated
from grader.intake.manifest import MANIFEST_NAME, Submission, load_manifest
from grader.intake.submission import file_hashes, vet_references
from grader.sandbox.base import EarlyWorker, Sandboxes

LOG_IN_RESULT = 1500  # characters of a broken sandbox's log kept in the result

# (team, assignment, moment, commit being decided) -> graded runs that count against today's limit
RunCount = Callable[[str, str, datetime, "str | None"], int]


@dataclass
class Grading:
    result: Result
    exit_code: int
    internal_error: str = ""


@dataclass
class _Known:
    """What is known so far, so a failure at any stage still yields a complete result."""

    folder: Path
    context: RunContext
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    t0: float = field(default_factory=time.monotonic)
    submission: Submission | None = None
    assignment: Assignment | None = None
    files: dict[str, str] = field(default_factory=dict)
    model_files: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkPlan:
    """The worker's job, the folders it reads (name -> host path), and which evaluation split it uses."""

    job: Job
    folders: dict[str, Path]
    data: str = ""
    heldout_labels: list[int] | None = None


def grade(
    folder: Path,
    sandboxes: Sandboxes,
    root: Path | None = None,
    context: RunContext | None = None,
    run_count: RunCount | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Grading:
    """Grade one submission folder; ``context`` (PR, SHA, event time) is recorded as given.

    ``progress`` hears what the grading is doing, one short phrase per stage (``grader check``
    shows it on a terminal and says nothing in a CI log).

    ``sandboxes`` says where untrusted code runs (``grader.commands`` chooses: the local sandbox,
    or Docker in CI). ``run_count`` counts today's graded runs for an assignment with a
    runs-per-day limit (from a results store); without it the limit is not enforced here.
    """
    known = _Known(folder=Path(folder), context=context or RunContext())
    try:
        return _grade(known, sandboxes, root or assignments_root(), run_count, progress)
    except SubmissionError as exc:
        if known.assignment is None and known.submission is None:
            known.assignment = folder_assignment(known.folder, root or assignments_root())
        return Grading(_rejected(known, exc), exitcodes.REJECTED)
    except Exception as exc:  # noqa: BLE001 - never a traceback for the student
        detail = "".join(traceback.format_exception(exc))
        return Grading(_errored(known, exc), exitcodes.INTERNAL, detail)


def _grade(
    known: _Known, sandboxes: Sandboxes, root: Path, run_count: RunCount | None, progress: Callable[[str], None]
) -> Grading:
    progress("reading submission.yaml")
    known.submission = submission = load_manifest(known.folder)
    known.assignment = assignment = load_assignment(submission.assignment, root)
    load_checker(assignment, root / assignment.id)
    checks = prepare(assignment)
    _enforce_run_limit(known, run_count)
    if assignment.service is not None:
        return _grade_service(known, checks, sandboxes)
    with tempfile.TemporaryDirectory(prefix="grader-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        vetted = _folder(work / "vetted")
        sandbox_dir = _folder(work / "sandbox", mode=0o700)
        early = _start_early(sandboxes, assignment, work, sandbox_dir)
        if early is not None:
            stack.callback(early.close)
        progress("checking the files (formats, sizes, what they store)")
        found = vet_isolated(known.folder, root, assignment, vetted)
        known.files = file_hashes(known.folder, found.artifacts)
        known.model_files = {a.role: dict(a.files) for a in found.artifacts if a.role not in ("inputs", "search_log")}
        found = dataclasses.replace(found, artifacts=stage(found.artifacts, known.folder, vetted))
        references = vet_references(assignment)
        plan = build_job(known.folder, found.artifacts, assignment, submission, references, work)
        progress("running the models in the sandbox (loading, comparing outputs, timing)")
        if early is not None:
            obs = early.run(plan.job, plan.folders)
        else:
            obs = sandboxes.worker(plan.job, assignment.limits, sandbox_dir, plan.folders)
    progress("scoring the checks")
    if obs.failure is None and (problems := contradictions(obs, {a.role: a.stored for a in found.artifacts})):
        raise SubmissionError.of(problems)
    files = {a.role: ModelFiles(a.files, a.size_bytes, a.gzip_bytes) for a in [*found.artifacts, *references]}
    keys = AnswerKeys(team=found.labels, heldout=plan.heldout_labels)
    return _finish(known, checks, obs, model_figures(obs, files, keys, assignment.score), data=plan.data)


def _start_early(sandboxes: Sandboxes, assignment: Assignment, work: Path, sandbox_dir: Path) -> EarlyWorker | None:
    """The worker started now, before the files are vetted, where the sandbox can and the job will
    be a CPU one: it mounts the folders that job will read (the course's references only where
    the assignment grades against some; the held-out inputs' folder, still empty, where it uses
    them), and waits there for its job."""
    measure = assignment.measure
    if sandboxes.early is None or measure.device != "cpu" or measure.derived:
        return None
    folders = {"vetted": work / "vetted"}
    if assignment.references:
        folders["references"] = references_root().resolve()
    if measure.heldout is not None:
        folders["heldout"] = _folder(work / "heldout")
    return sandboxes.early(assignment.limits, sandbox_dir, folders, measure.timing.threads)


def _folder(path: Path, mode: int = 0o755) -> Path:
    """A folder of the grading's own; readable by a container's unprivileged user unless ``mode`` says not."""
    path.mkdir(mode=mode)
    path.chmod(mode)
    return path


def _enforce_run_limit(known: _Known, run_count: RunCount | None) -> None:
    assignment, submission = known.assignment, known.submission
    if not assignment.max_runs_per_day or run_count is None:
        return
    moment = known.context.event_time or datetime.now(timezone.utc)
    used = run_count(submission.team, assignment.id, moment, known.context.head_sha)
    refusal = limit_reached(submission.team, assignment.id, used, assignment.max_runs_per_day, moment)
    if refusal is not None:
        raise refusal


def claimed(submission: Submission, key: str | None) -> bool:
    return key is None or submission.claims.get(key) is True


def build_job(
    folder: Path,
    artifacts: list[Artifact],
    assignment: Assignment,
    submission: Submission,
    references: list[Artifact],
    work: Path,
) -> WorkPlan:
    """What the worker must do; derived models are built only where the submission asks for them.

    The course's evaluation data reaches the worker without its labels: a copy of its inputs is
    written into ``work``, and the host keeps the labels to score the worker's answers with.
    """
    models = [
        ModelJob(role=a.role, file=a.ref, format=a.format, architecture=a.architecture, name=a.relpath)
        for a in artifacts
        if a.role not in ("inputs", "search_log")
    ]
    models += [
        ModelJob(role=a.role, file=a.ref, format=a.format, architecture=a.architecture, trusted=True, name=a.relpath)
        for a in references
    ]
    inputs = next((a.ref for a in artifacts if a.role == "inputs"), None)
    log = next((a for a in artifacts if a.role == "search_log"), None)
    study = submission.claims.get("study")
    timing = assignment.measure.timing.model_copy(update={"decisions": timing_decisions(assignment)})
    measure = assignment.measure.model_copy(
        update={"derived": [d for d in assignment.measure.derived if claimed(submission, d.claim)], "timing": timing}
    )
    folders = {"references": references_root().resolve(), "vetted": work / "vetted"}
    heldout, data, labels = None, "", None
    if assignment.measure.heldout is not None:
        found = evaluation_file(assignment.id, references_root(), assignment.measure.heldout.inputs)
        if not found.host_path.is_file():
            raise ConfigError(
                f"held-out data {found.host_path} is missing. Build the references with: python -m reference.build"
            )
        heldout_dir = work / "heldout" if (work / "heldout").is_dir() else _folder(work / "heldout")
        labels = without_labels(found.host_path, heldout_dir / "inputs.npz", assignment.measure.max_samples)
        heldout, data = FileRef(folder="heldout", path="inputs.npz"), found.split
        folders["heldout"] = work / "heldout"
    job = Job(
        models=models,
        inputs=inputs,
        measure=measure,
        heldout_inputs=heldout,
        search_log=SearchLogJob(file=log.ref, format=log.format, study=str(study) if study is not None else None)
        if log
        else None,
    )
    return WorkPlan(job, {name: path for name, path in folders.items() if name in job.folders()}, data, labels)


def without_labels(source: Path, target: Path, limit: int) -> list[int]:
    """Copy the evaluation inputs without their labels (they never enter the sandbox); return the labels."""
    import numpy as np

    with np.load(source, allow_pickle=False) as archive:
        arrays = {k: archive[k][:limit] for k in archive.files}
    if "labels" not in arrays:
        raise ConfigError(f"{source} holds no labels: the course's evaluation data must have them")
    labels = arrays.pop("labels").reshape(-1)
    np.savez(target, **arrays)
    target.chmod(0o644)
    return [int(y) for y in labels]


def _grade_service(known: _Known, checks: list[BoundCheck], sandboxes: Sandboxes) -> Grading:
    """Service track: the team's service and the reference service under the same load."""
    from grader.grading.service import observe_service

    if known.submission.service is None:
        raise SubmissionError(
            "this assignment grades a service, but submission.yaml has no 'service'.",
            'Add service: {command: ["{python}", "-m", "uvicorn", "app:app", '
            '"--uds", "{socket}"]} (see the assignment README).',
            kind="manifest",
            field="service",
        )
    known.files = {MANIFEST_NAME: sha256_file(known.folder / MANIFEST_NAME)}
    host = sandboxes.services
    seen = observe_service(known.assignment, known.submission, known.folder, host)
    obs = Observations(failure=seen.failure, environment=Environment(sandbox=host.describe()))
    figures = service_figures(seen.team, seen.reference, known.assignment.score, complete=seen.failure is None)
    return _finish(known, checks, obs, figures, seen.notes, seen.data_name)


def _finish(
    known: _Known,
    checks: list[BoundCheck],
    obs: Observations,
    figures: Figures,
    notes: list[Problem] = (),
    data: str = "",
) -> Grading:
    """Checks and result; ``notes`` are problems worth fixing that did not stop the grading."""
    ctx = CheckContext(known.assignment, known.submission, obs, figures.values, figures.summaries)
    results = warn_moving_clocks(evaluate(checks, ctx), checks, obs.environment)
    problems = ([obs.failure] if obs.failure else []) + list(notes)
    environment = obs.environment.model_copy(update={"data": data}) if data else obs.environment
    result = _result(known, "rejected" if obs.failure else "graded", results, problems, environment, figures.values)
    result = result.model_copy(update={"flags": figures.flags})
    return Grading(result, exitcodes.REJECTED if obs.failure else exitcodes.GRADED)


def warn_moving_clocks(results: list[CheckResult], checks: list[BoundCheck], env: Environment) -> list[CheckResult]:
    """A check that reads timing figures says so when the GPU's clocks moved during the run: the
    interleaved ratio cancels most of a clock change, an absolute time does not."""
    moved = env.gpu_facts.clocks_moved if env.gpu_facts is not None else ""
    if not moved:
        return results
    timed = {check.spec.id for check in checks if check.spec.device_figures}
    warning = (
        f" Warning: the GPU's clocks moved during this run ({moved}); interleaved ratios cancel most of "
        "that, absolute times do not. Staff can regrade on a steady GPU."
    )
    return [
        r.model_copy(update={"message": r.message + warning}) if r.id in timed and not r.pending else r for r in results
    ]


def _result(
    known: _Known,
    status: str,
    checks: list[CheckResult],
    problems: list[Problem],
    environment: Environment | None = None,
    metrics: dict | None = None,
) -> Result:
    sub, assignment = known.submission, known.assignment
    return Result(
        status=status,
        assignment=AssignmentRef(
            id=assignment.id if assignment else (sub.assignment if sub else "unknown"),
            version=assignment.version if assignment else 0,
        ),
        submission=SubmissionRef(
            team=sub.team if sub else fallback_team(known.folder),
            members=sub.members if sub else [],
            path=str(known.folder),
            files=known.files,
            model_files=known.model_files,
            claims=sub.claims if sub else {},
            reported=sub.reported if sub else {},
            notes=sub.notes if sub else "",
        ),
        **(totals(checks) if checks else {"score": 0.0, "max_score": assignment.max_score if assignment else 0.0}),
        checks=checks,
        problems=problems,
        metrics=metrics or {},
        environment=environment or Environment(),
        grader=GraderRef(version=__version__),
        context=known.context,
        started_at=known.started_at,
        duration_s=round(time.monotonic() - known.t0, 3),
    )


def _rejected(known: _Known, exc: SubmissionError) -> Result:
    reason = (
        "Not graded: fix what the report lists first."
        if len(exc.problems) > 1
        else "Not graded: see what to fix above."
    )
    checks = skipped_all(known.assignment, reason) if known.assignment else []
    return _result(known, "rejected", checks, exc.problems)


def _errored(known: _Known, exc: BaseException) -> Result:
    log = getattr(exc, "log_tail", "")  # a WorkerError's sandbox log: into the result (escaped), never to stderr
    problem = Problem(
        kind="internal",
        message=f"The grader failed ({type(exc).__name__}). This is not your fault and "
        "is not charged to you; course staff have the details.",
        hint=f"The sandbox's last output, for course staff: {log[-LOG_IN_RESULT:]}" if log else "",
    )
    checks = skipped_all(known.assignment, "Not graded: internal grader error.") if known.assignment else []
    return _result(known, "error", checks, [problem])


def folder_assignment(folder: Path, root: Path) -> Assignment | None:
    """The assignment a folder means by its place (``submissions/<team>/<assignment>``), for the
    heading and the maximum of a report whose submission.yaml could not be read."""
    name = Path(folder).resolve().name
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", name):
        return None
    try:
        return load_assignment(name, root)
    except Exception:  # noqa: BLE001 - not an assignment's folder: the report says "unknown"
        return None


def fallback_team(folder: Path) -> str:
    """A team name for a folder whose manifest could not be read: submissions/<team>/<hw>."""
    name = Path(folder).resolve().parent.name.lower()
    return re.sub(r"[^a-z0-9-]", "-", name)[:39] or "unknown"
