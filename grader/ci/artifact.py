"""The grading job's ``result.json``, loaded as hostile input by the job that comments.

The grading job ran student models on a self-hosted runner; if a model ever escaped the sandbox
it could replace the file. So the publisher accepts it only if it is a small regular file, parses
against the strict result schema, belongs to this run (repository, PR number, head SHA, run id as
GitHub gave them to the publisher; on a re-run, the attempt the grading job last ran in), and
adds up (points within each check's maximum, the score their sum, the maximum the base branch's
assignment less any pending points). Anything else is an ``ArtifactRejected``:
the PR gets an ``error`` report that is not charged to the student.

What this cannot catch is a well-formed lie (a plausible score forged from inside the runner);
ephemeral runners and the sandbox are the defence there (see docs/security.md).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from grader.config.assignment import Assignment
from grader.contracts.result import CheckStatus, Result
from grader.records.filing import keyed_to_folder

MAX_RESULT_BYTES = 4 * 2**20
SCORE_TOLERANCE = 0.01


class ArtifactRejected(Exception):
    """The uploaded result cannot be trusted; ``reason`` says why (shown to staff and the student)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Expected:
    """What the result must belong to: facts from the event and the policy, never from the artifact."""

    repository: str
    pr_number: int
    head_sha: str
    run_id: int | None
    team: str
    assignment: str
    run_attempt: int | None = None  # the attempt the grading job last ran in, where the workflow says


def read_result(path: Path, max_bytes: int = MAX_RESULT_BYTES) -> Result:
    """Parse ``path`` as a result, refusing anything that is not a small regular file of valid JSON."""
    try:
        info = path.lstat()
    except OSError:
        raise ArtifactRejected("the grading job uploaded no result.json") from None
    if not stat.S_ISREG(info.st_mode):
        raise ArtifactRejected("result.json is not a regular file")
    if info.st_size > max_bytes:
        raise ArtifactRejected(f"result.json is {info.st_size} bytes, over the {max_bytes}-byte cap")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ArtifactRejected(f"result.json is over the {max_bytes}-byte cap")
    try:
        return Result.model_validate_json(data)
    except ValidationError as exc:
        first = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()[:3])
        raise ArtifactRejected(
            f"result.json does not match the result schema ({exc.error_count()} error(s): {first[:300]})"
        ) from None


def check_belongs(result: Result, expected: Expected) -> None:
    """The result must name this run's repository, PR, head commit and run."""
    ctx = result.context
    claimed = (ctx.repository, ctx.pr_number, ctx.head_sha, ctx.run_id)
    wanted = (expected.repository, expected.pr_number, expected.head_sha, expected.run_id)
    if claimed != wanted:
        raise ArtifactRejected(
            f"result.json belongs to {ctx.repository} PR #{ctx.pr_number} at {ctx.head_sha} "
            f"(run {ctx.run_id}), not to {expected.repository} PR #{expected.pr_number} at "
            f"{expected.head_sha} (run {expected.run_id})"
        )
    if expected.run_attempt is not None and ctx.run_attempt != expected.run_attempt:
        raise ArtifactRejected(
            f"result.json is from attempt {ctx.run_attempt} of run {ctx.run_id}, but the grading job last ran "
            f"in attempt {expected.run_attempt} and uploaded no newer result"
        )


def check_adds_up(result: Result, assignment: Assignment) -> None:
    """Points within bounds and summing to the score; checks and maximum as the base branch defines them.

    A check may be pending (skipped for want of hardware, its points counting neither way) only where
    the base branch's rule can be, and then with no points; the maximum is the assignment's total less
    those pending points, so a forged "pending" cannot shrink the maximum a score is read against.
    """
    for check in result.checks:
        if not 0 <= check.points <= check.max_points:
            raise ArtifactRejected(f"check {check.id!r} has {check.points} of {check.max_points} points")
    if abs(sum(c.points for c in result.checks) - result.score) > SCORE_TOLERANCE:
        raise ArtifactRejected("the score is not the sum of the checks' points")
    if result.status != "graded":
        return
    specs = {c.id: c for c in assignment.checks}
    reported = {c.id: c.max_points for c in result.checks}
    if reported != {c.id: c.points for c in assignment.checks}:
        raise ArtifactRejected(f"the checks or maximum score differ from assignment {assignment.id} on the base branch")
    for check in result.checks:
        if check.pending and (
            not specs[check.id].may_be_pending or check.points or check.status is not CheckStatus.SKIPPED
        ):
            raise ArtifactRejected(
                f"check {check.id!r} claims to be pending, which assignment {assignment.id} does not allow for it"
            )
    pending = sum(c.max_points for c in result.checks if c.pending and not c.bonus)
    if (
        abs(result.max_score - (assignment.max_score - pending)) > SCORE_TOLERANCE
        or abs(result.pending_points - pending) > SCORE_TOLERANCE
    ):
        raise ArtifactRejected(
            f"the maximum score {result.max_score:g} is not assignment {assignment.id}'s {assignment.max_score:g} "
            f"less the {pending:g} pending points"
        )


def load_result_artifact(
    path: Path, expected: Expected, assignment: Assignment, max_bytes: int = MAX_RESULT_BYTES
) -> Result:
    """The validated result for this run, filed under the approved folder, or ``ArtifactRejected``."""
    result = read_result(path, max_bytes)
    check_belongs(result, expected)
    result = keyed_to_folder(result, expected.team, expected.assignment)
    check_adds_up(result, assignment)
    return result
