"""Grade a service: start it (and the course's reference service) in the sandbox, load both the
same way in the same run, and turn what the load generator saw into named figures.

The reference service runs beside the team's on the same machine in the same run, and the load
alternates between them in slices (team, reference, reference, team, ... at each level), so drift
in the machine's load falls on both alike: throughput is judged as a ratio, and services graded
on different runners stay comparable.
"""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grader.config.assignment import Assignment, ServiceSpec
from grader.config.heldout import evaluation_data
from grader.config.paths import REPO_ROOT
from grader.contracts.problem import Problem
from grader.grading.corpus import Item, load_corpus
from grader.grading.figures import ServiceLoad
from grader.grading.loadgen import LevelStats, run_level, wait_healthy
from grader.intake.manifest import Submission
from grader.sandbox.base import Service, ServiceHost


def expected_answers(spec: ServiceSpec, corpus_path: Path) -> np.ndarray:
    """The reference model's answers for the corpus (trusted model, run on the host)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(REPO_ROOT / spec.reference_model), providers=["CPUExecutionProvider"])
    with np.load(corpus_path, allow_pickle=False) as archive:
        inputs = archive["input"][: spec.max_requests].astype(np.float32)
    return session.run(None, {session.get_inputs()[0].name: inputs})[0].argmax(-1)


def _interleaved_load_test(
    team: Service, reference: Service, spec: ServiceSpec, corpus: list[Item]
) -> tuple[list[LevelStats], list[LevelStats]]:
    """Warm both up, then each level in ``spec.rounds`` slices per service, in ABBA order."""
    for service in (team, reference):
        run_level(
            service.socket, corpus, concurrency=1, duration_s=spec.warmup_s, request_timeout_s=spec.request_timeout_s
        )
    slice_s = spec.level_s / spec.rounds
    team_levels, reference_levels = [], []
    for level in spec.levels:
        parts: dict[int, list[LevelStats]] = {id(team): [], id(reference): []}
        for round_ in range(spec.rounds):
            for service in (team, reference) if round_ % 2 == 0 else (reference, team):
                parts[id(service)].append(run_level(service.socket, corpus, level, slice_s, spec.request_timeout_s))
        team_levels.append(LevelStats.combined(parts[id(team)]))
        reference_levels.append(LevelStats.combined(parts[id(reference)]))
    return team_levels, reference_levels


def _never_healthy(service: Service, spec: ServiceSpec) -> Problem:
    how = "exited" if not service.alive() else f"did not answer GET /health within {spec.startup_s:.0f} s"
    return Problem(
        kind="load",
        field="service",
        message=f"the service {how}",
        hint=f"Check it starts with the command in submission.yaml and listens on $GRADER_SOCKET. "
        f"Its last log lines: {_last_log_lines(service)}",
    )


LOG_CHARS = 1200  # a failure's hint holds at most 2000 characters, the advice included


def _last_log_lines(service: Service) -> str:
    """The end of the service's log, cut to fit in a report (a crash can print one huge line)."""
    text = service.log_tail()
    return text if len(text) <= LOG_CHARS else "..." + text[-LOG_CHARS:]


def _limit_hit(service: Service, name: str) -> Problem | None:
    """The limit that stopped the service, said of the service and with its last log lines."""
    if service.stopped is None:
        return None
    return service.stopped.model_copy(
        update={"field": name, "hint": f"{service.stopped.hint} Its last log lines: {_last_log_lines(service)}"}
    )


def _exited(service: Service, name: str) -> Problem | None:
    """Why the service is gone after the load test, if it is."""
    if service.alive():
        return None
    return _limit_hit(service, name) or Problem(
        kind="run",
        field=name,
        message="the service exited during the load test",
        hint=f"Its last log lines: {_last_log_lines(service)}",
    )


def _trouble(service: Service, levels: list[LevelStats]) -> Problem | None:
    """Requests that failed under load, with the service's own account of it: a hang shows in its log."""
    lost = sum(s.failed for s in levels)
    refused = sum(s.http_errors for s in levels)
    if not lost and not refused:
        return None
    total = sum(s.requests for s in levels)
    return Problem(
        kind="load",
        field="service",
        message=f"{lost + refused} of {total} requests failed under load ({lost} timed out or lost "
        f"the connection, {refused} answered with an HTTP error); they count as errors.",
        hint=f"A service that hangs or falls over under concurrent load usually says why in its log. "
        f"Its last log lines: {_last_log_lines(service)}",
    )


CALIBRATION_FLOOR = 0.5  # the reference may run no slower than half its own solo throughput beside the team's


def _calibrate(reference: Service, spec: ServiceSpec, corpus: list[Item]) -> LevelStats:
    """The reference service alone, before the team's starts: warmed up, then one slice at the top level."""
    run_level(reference.socket, corpus, 1, spec.warmup_s, spec.request_timeout_s)
    return run_level(reference.socket, corpus, spec.levels[-1], spec.level_s / spec.rounds, spec.request_timeout_s)


def _disturbed(calibration: LevelStats, reference_levels: list[LevelStats]) -> Problem | None:
    """Whether the reference ran far slower beside the team's service than alone: a service that
    works (or hogs the machine) while it has no requests slows the reference and inflates its own ratio."""
    during = reference_levels[-1]
    if calibration.throughput <= 0 or during.throughput >= CALIBRATION_FLOOR * calibration.throughput:
        return None
    return Problem(
        kind="load",
        field="service",
        message=f"the course's reference service answered {during.throughput:.0f} requests/s while your service was "
        f"running, against {calibration.throughput:.0f} alone: it was slowed by more than half, so the throughput "
        "comparison is void",
        hint="A service must leave the machine alone when it has no requests (no busy loops or background threads), "
        "and must never touch anything but its own socket.",
    )


@dataclass
class ServiceObservation:
    """What load-testing a service showed: the failure that stopped grading, if any, each
    service's load test (``grader.grading.figures`` names its figures), which data the corpus
    was, and notes for the student that do not stop the grading."""

    failure: Problem | None
    team: ServiceLoad | None
    reference: ServiceLoad | None
    data_name: str
    notes: list[Problem] = field(default_factory=list)


def observe_service(
    assignment: Assignment, submission: Submission, folder: Path, host: ServiceHost
) -> ServiceObservation:
    """Load-test the team's service and the reference service on the same host."""
    spec = assignment.service
    assert spec is not None and submission.service is not None
    corpus_path, data_name = evaluation_data(assignment.id, REPO_ROOT / spec.corpus)
    corpus = load_corpus(corpus_path, expected_answers(spec, corpus_path), spec.max_requests)
    limits, threads = assignment.limits, assignment.measure.timing.threads
    with tempfile.TemporaryDirectory(prefix="grader-service-") as work, ExitStack() as running:
        # the reference first, alone: its calibration is what its figures are checked against later
        reference = running.enter_context(
            host.start(
                spec.reference_command,
                REPO_ROOT / spec.reference_folder,
                limits,
                Path(work),
                threads,
                "reference_service",
                [REPO_ROOT / f for f in spec.reference_files],
            )
        )
        ref_startup = wait_healthy(reference.socket, spec.startup_s, reference.alive)
        if ref_startup is None:
            raise RuntimeError(f"the reference service did not become healthy: {_last_log_lines(reference)}")
        calibration = _calibrate(reference, spec, corpus)
        team = running.enter_context(
            host.start(submission.service.command, folder.resolve(), limits, Path(work), threads, "service", [])
        )
        startup = wait_healthy(team.socket, spec.startup_s, team.alive)
        if startup is None:
            return ServiceObservation(_limit_hit(team, "service") or _never_healthy(team, spec), None, None, data_name)
        levels, ref_levels = _interleaved_load_test(team, reference, spec, corpus)
        failure = _exited(team, "service")
        if failure is not None:
            return ServiceObservation(failure, ServiceLoad(levels, startup), None, data_name)
        trouble = _trouble(team, levels)
        if _exited(reference, "reference_service") is not None:
            raise RuntimeError(f"the reference service failed during the load test: {_last_log_lines(reference)}")
    disturbed = _disturbed(calibration, ref_levels)
    if disturbed is not None:  # the comparison is void: no throughput ratio, and the team is told why
        return ServiceObservation(
            None, ServiceLoad(levels, startup), None, data_name, [n for n in (trouble, disturbed) if n is not None]
        )
    return ServiceObservation(
        None,
        ServiceLoad(levels, startup),
        ServiceLoad(ref_levels, ref_startup),
        data_name,
        [trouble] if trouble else [],
    )
