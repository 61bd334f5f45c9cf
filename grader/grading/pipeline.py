"""The pipeline: submission folder -> manifest -> vetted artifacts -> sandboxed worker -> checks -> result.

Each stage hands the next only its output. Whatever happens, a ``Result`` comes back: a student's
mistake becomes ``rejected`` with problems that say what to fix, the grader's own fault ``error``.
"""

from __future__ import annotations

import re
import tempfile
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from grader import __version__, exitcodes
from grader.intake.artifacts import Artifact, sha256_file, vet_inputs, vet_model, vet_search_log
from grader.config.assignment import Assignment, assignments_root, load_assignment, references_root
from grader.checks import CheckContext, evaluate
from grader.checks.engine import load_checker, skipped_all, totals
from grader.errors import ConfigError, SubmissionError
from grader.config.heldout import evaluation_data
from grader.contracts.job import Job, ModelJob, SearchLogJob
from grader.intake.manifest import MANIFEST_NAME, ManifestError, Submission, load_manifest
from grader.grading.figures import figures
from grader.contracts.observations import Environment, Observations
from grader.contracts.result import AssignmentRef, CheckResult, GraderRef, Problem, Result, RunContext, SubmissionRef
from grader.sandbox.base import Runner, ServiceHost, WorkerError
from grader.sandbox.local import run_worker as local_runner
from grader.config.scoring import SCORE_FIGURE


@dataclass
class Grading:
    result: Result
    exit_code: int
    internal_error: str = ""


@dataclass
class _State:
    """What is known so far, so a failure at any stage still yields a complete result."""

    folder: Path
    started_at: datetime
    t0: float
    context: RunContext
    runner: Runner
    store: Path | None = None
    service_host: ServiceHost | None = None
    submission: Submission | None = None
    assignment: Assignment | None = None
    files: dict[str, str] | None = None


def vet_submission(folder: Path, submission: Submission, assignment: Assignment) -> list[Artifact]:
    """Check the manifest against the assignment, then vet every file it names."""
    missing = [r for r, slot in assignment.models.items() if slot.required and r not in submission.models]
    if missing:
        raise SubmissionError(
            f"submission.yaml names no model for role(s) {missing}.",
            f"This assignment expects models: {', '.join(assignment.models)}.",
            kind="manifest",
        )
    unknown = [r for r in submission.models if r not in assignment.models]
    if unknown:
        raise SubmissionError(
            f"submission.yaml names unknown model role(s) {unknown}.",
            f"This assignment expects models: {', '.join(assignment.models)}.",
            kind="manifest",
        )
    limit = assignment.limits.model_file_mb
    artifacts = [vet_model(folder, role, ref.path, ref.architecture, limit) for role, ref in submission.models.items()]
    for artifact in artifacts:
        _check_format(artifact, assignment)
    if submission.data.inputs:
        artifacts.append(vet_inputs(folder, submission.data.inputs, assignment.limits.inputs_file_mb))
    elif assignment.inputs_required:
        raise SubmissionError("submission.yaml names no inputs.", "Add data: {inputs: inputs.npz}.", kind="manifest")
    if submission.data.search_log:
        artifacts.append(vet_search_log(folder, submission.data.search_log, assignment.limits.search_log_mb))
    elif assignment.search_log_required:
        raise SubmissionError("submission.yaml names no search log.",
                              "Add data: {search_log: study.db} (an Optuna SQLite study) or a CSV / JSON export "
                              "of study.trials_dataframe(); see the assignment README.", kind="manifest")
    return artifacts


FORMAT_NAMES = {"onnx": "ONNX", "torchscript": "TorchScript (torch.jit.save)", "pt2": "a torch.export program (.pt2)",
                "safetensors": "safetensors"}


def _check_format(artifact: Artifact, assignment: Assignment) -> None:
    allowed = assignment.models[artifact.role].formats
    if allowed and artifact.format not in allowed:
        wanted = " or ".join(FORMAT_NAMES[f] for f in allowed)
        raise SubmissionError(
            f"model '{artifact.role}' ('{artifact.relpath}') is {FORMAT_NAMES.get(artifact.format, artifact.format)}, "
            f"but this assignment needs {wanted} for it.",
            f"Save the '{artifact.role}' model as {wanted}; see the assignment README.",
            kind="format",
        )


def vet_references(assignment: Assignment) -> list[Artifact]:
    """The course's own models this assignment grades against: trusted, but still vetted and hashed."""
    root = references_root()
    artifacts = []
    for role, ref in assignment.references.items():
        try:
            artifacts.append(vet_model(root, role, ref.path, ref.architecture, assignment.limits.model_file_mb))
        except SubmissionError as exc:  # a missing or broken reference is staff's to fix, not the student's
            raise ConfigError(f"reference model '{role}' ({root / ref.path}): {exc}. "
                              "Build the references with: python -m reference.build") from None
    return artifacts


def heldout_inputs(assignment: Assignment) -> str | None:
    """The course's labelled data; ``$GRADER_HELDOUT_DIR/<id>.npz`` (a runner secret) replaces it."""
    if assignment.measure.heldout is None:
        return None
    path, _ = evaluation_data(assignment.id, references_root() / assignment.measure.heldout.inputs)
    if not path.is_file():
        raise ConfigError(f"held-out data {path} is missing. Build the references with: python -m reference.build")
    return str(path)


def readonly_folders(folder: Path, job: Job) -> list[Path]:
    """What the worker may read: the submission, and the course's references when the job uses them.

    The Docker runner mounts exactly these (and rewrites the job's paths into them).
    """
    folders = [folder.resolve()]
    references = references_root().resolve()
    paths = [m.path for m in job.models] + ([job.heldout_inputs] if job.heldout_inputs else [])
    if any(references in Path(p).resolve().parents for p in paths):
        folders.append(references)
    return folders


def file_hashes(folder: Path, artifacts: list[Artifact]) -> dict[str, str]:
    hashes = {MANIFEST_NAME: sha256_file(folder / MANIFEST_NAME)}
    for art in artifacts:
        hashes[art.relpath] = art.sha256
        hashes.update(art.extra_files)
    return hashes


def claimed(submission: Submission, key: str | None) -> bool:
    return key is None or submission.claims.get(key) is True


def build_job(artifacts: list[Artifact], assignment: Assignment, submission: Submission | None = None,
              references: list[Artifact] | None = None) -> Job:
    """What the worker must do; derived models are built only where the submission asks for them."""
    models = [ModelJob(role=a.role, path=str(a.path), relpath=a.relpath, format=a.format, architecture=a.architecture)
              for a in artifacts if a.role not in ("inputs", "search_log")]
    models += [ModelJob(role=a.role, path=str(a.path), relpath=f"reference:{a.relpath}", format=a.format,
                        architecture=a.architecture, trusted=True) for a in references or []]
    inputs = next((str(a.path) for a in artifacts if a.role == "inputs"), None)
    log = next((a for a in artifacts if a.role == "search_log"), None)
    study = submission.claims.get("study") if submission is not None else None
    measure = assignment.measure.model_copy(update={"derived": [
        d for d in assignment.measure.derived if submission is None or claimed(submission, d.claim)]})
    return Job(models=models, inputs=inputs, measure=measure, output="", heldout_inputs=heldout_inputs(assignment),
               search_log=SearchLogJob(path=str(log.path), format=log.format,
                                       study=str(study) if study is not None else None) if log else None)


def grade(folder: Path, root: Path | None = None, context: RunContext | None = None,
          runner: Runner | None = None, store: Path | None = None,
          service_host: ServiceHost | None = None) -> Grading:
    """Grade one submission folder; ``context`` (PR, SHA, event time) is recorded as given.

    ``runner`` runs the worker: the local sandbox by default, or e.g. a ``DockerRunner``
    (``grader.sandbox.base.select_runner``); ``service_host`` does the same for the service track
    (``select_service_host``). Only these choices differ between them. ``store`` (a results
    store) enforces the assignment's runs-per-day limit, if it has one.
    """
    state = _State(folder=Path(folder), started_at=datetime.now(timezone.utc), t0=time.monotonic(),
                   context=context or RunContext(), runner=runner or local_runner, store=store,
                   service_host=service_host)
    try:
        return _grade(state, root or assignments_root())
    except SubmissionError as exc:
        return Grading(_rejected(state, exc), exitcodes.REJECTED)
    except (ConfigError, WorkerError, Exception) as exc:  # noqa: BLE001 - never a traceback for the student
        detail = "".join(traceback.format_exception(exc))
        return Grading(_errored(state, exc), exitcodes.INTERNAL, detail)


def _grade(state: _State, root: Path) -> Grading:
    state.submission = load_manifest(state.folder)
    state.assignment = load_assignment(state.submission.assignment, root)
    load_checker(state.assignment, root / state.assignment.id)
    if state.assignment.max_runs_per_day and state.store is not None:
        from grader.records.runlimit import enforce

        enforce(state.store, state.submission.team, state.assignment.id, state.assignment.max_runs_per_day,
                state.context.event_time, state.context.head_sha)
    if state.assignment.service is not None:
        return _grade_service(state)
    artifacts = vet_submission(state.folder, state.submission, state.assignment)
    state.files = file_hashes(state.folder, artifacts)
    job = build_job(artifacts, state.assignment, state.submission, vet_references(state.assignment))
    with tempfile.TemporaryDirectory(prefix="grader-") as work:
        obs = state.runner(job, state.assignment.limits, Path(work), readonly_folders(state.folder, job))
    if state.assignment.measure.heldout is not None:
        obs.environment.data = evaluation_data(state.assignment.id, Path())[1]
    return _finish(state, obs, figures(obs))


def _grade_service(state: _State) -> Grading:
    """Service track: the team's service and the reference service under the same load."""
    from grader.grading.service import observe_service
    from grader.sandbox.service_local import LocalServiceHost

    if state.submission.service is None:
        raise SubmissionError("this assignment grades a service, but submission.yaml has no 'service'.",
                              "Add service: {command: [\"{python}\", \"-m\", \"uvicorn\", \"app:app\", "
                              "\"--uds\", \"{socket}\"]} (see the assignment README).", kind="manifest")
    state.files = {MANIFEST_NAME: sha256_file(state.folder / MANIFEST_NAME)}
    host = state.service_host or LocalServiceHost()
    seen = observe_service(state.assignment, state.submission, state.folder, host)
    obs = Observations(failure=seen.failure, environment=Environment(sandbox=host.describe(), data=seen.data_name))
    notes = [Problem(kind=n.kind, message=n.message, hint=n.hint) for n in seen.notes]
    return _finish(state, obs, seen.figures, notes)


def _finish(state: _State, obs: Observations, figures_: dict, notes: list[Problem] | None = None) -> Grading:
    """Checks, score and result; ``notes`` are problems worth fixing that did not stop the grading."""
    if state.assignment.score is not None and obs.failure is None:
        figures_[SCORE_FIGURE] = state.assignment.score.evaluate(figures_)
    ctx = CheckContext(state.assignment, state.submission, obs, figures_)
    checks = evaluate(ctx)
    problems = [Problem(kind=obs.failure.kind, message=obs.failure.message, hint=obs.failure.hint)] if obs.failure else []
    problems += notes or []
    result = _result(state, "rejected" if obs.failure else "graded", checks, problems, environment=obs.environment)
    result.metrics = figures_
    return Grading(result, exitcodes.REJECTED if obs.failure else exitcodes.GRADED)


def _result(state: _State, status: str, checks: list[CheckResult], problems: list[Problem],
            environment: Environment | None = None) -> Result:
    sub, assignment = state.submission, state.assignment
    return Result(
        status=status,
        assignment=AssignmentRef(id=assignment.id if assignment else (sub.assignment if sub else "unknown"),
                                 version=assignment.version if assignment else 0),
        submission=SubmissionRef(
            team=sub.team if sub else fallback_team(state.folder), members=sub.members if sub else [],
            path=str(state.folder), files=state.files or {},
            claims=sub.claims if sub else {}, reported=sub.reported if sub else {}, notes=sub.notes if sub else "",
        ),
        **(totals(checks) if checks else {"score": 0.0, "max_score": assignment.max_score if assignment else 0.0}),
        checks=checks,
        problems=problems,
        environment=environment or Environment(),
        grader=GraderRef(version=__version__),
        context=state.context,
        started_at=state.started_at,
        duration_s=round(time.monotonic() - state.t0, 3),
    )


def _rejected(state: _State, exc: SubmissionError) -> Result:
    if isinstance(exc, ManifestError):
        problems = [Problem(kind="manifest", field=field, message=msg) for field, msg in exc.problems]
    else:
        problems = [Problem(kind=exc.kind, message=exc.message, hint=exc.hint)]
    reason = f"Not graded: {problems[0].message}"
    checks = skipped_all(state.assignment, reason) if state.assignment else []
    return _result(state, "rejected", checks, problems)


def _errored(state: _State, exc: BaseException) -> Result:
    problem = Problem(kind="internal", message=f"The grader failed ({type(exc).__name__}). This is not your fault and "
                      "is not charged to you; course staff have the details.", hint="")
    checks = skipped_all(state.assignment, "Not graded: internal grader error.") if state.assignment else []
    return _result(state, "error", checks, [problem])


def fallback_team(folder: Path) -> str:
    """A team name for a folder whose manifest could not be read: submissions/<team>/<hw>."""
    name = Path(folder).resolve().parent.name.lower()
    return re.sub(r"[^a-z0-9-]", "-", name)[:39] or "unknown"
