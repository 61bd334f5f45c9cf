"""A team's graded runs of one assignment today, counted where CI has no results store.

The policy job decides whether a PR may use the GPU runner; for an assignment with
``max_runs_per_day`` it counts from the grading workflow's own record: every grading run uploads
its ``result.json`` as the artifact ``result-<team>-<assignment>`` (kept 7 days by grade.yml), so
one listing by exact name finds one team's runs, and only those are downloaded: the job token's
API budget does not grow with the class. Those files come from
jobs that ran student models, so each is read the way ``grader results collect`` reads artifacts
(size caps, schema, the workflow run that uploaded it), and a run counts for a team only if
the PR it names was opened by a member of that team: a forged artifact cannot use up another
team's runs. An artifact that cannot be read counts for nobody, and the job's log says so (a
GitHub ``::warning::``), so a count that looks low can be traced. The rule itself (graded
commits per UTC day, never the commit being decided) is ``grader.config.policy.count_graded``,
the same as with the store.
"""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Callable
from datetime import datetime

from github import Github, GithubException
from github.Repository import Repository

from grader.ci.collect import DEFAULT_ARTIFACT, artifact_name, artifact_results
from grader.config.policy import GradedRun, utc_day
from grader.config.roster import Roster
from grader.records.ingest import InvalidResult


def published_runs(
    gh: Github,
    repository: str,
    roster: Roster,
    team: str,
    assignment: str,
    moment: datetime,
    prefix: str = DEFAULT_ARTIFACT,
    warn: Callable[[str], None] | None = None,
) -> list[GradedRun]:
    """The runs of (team, assignment) whose GitHub event fell on ``moment``'s UTC day, from the artifacts."""
    start, end = utc_day(moment)
    repo = gh.get_repo(repository)
    members: dict[int, bool] = {}
    runs = []
    for artifact in repo.get_artifacts(name=artifact_name(team, assignment, prefix)):
        if artifact.expired or artifact.created_at < start:  # uploaded after its event, so not today's
            continue
        try:
            results = artifact_results(gh, artifact, repository)
        except (InvalidResult, zipfile.BadZipFile, OSError, GithubException) as exc:
            (warn or _warn)(f"artifact {artifact.name} #{artifact.id} not counted: {exc}")
            continue  # an unreadable artifact is charged to nobody
        for result in results:
            ctx = result.context
            if (result.submission.team, result.assignment.id) != (team, assignment):
                continue
            if ctx.event_time is None or not start <= ctx.event_time < end or ctx.pr_number is None:
                continue
            if _opened_by_team(repo, ctx.pr_number, team, roster, members):
                runs.append(
                    GradedRun(
                        team=team,
                        assignment=assignment,
                        status=result.status,
                        event_time=ctx.event_time,
                        head_sha=ctx.head_sha,
                        run_key=f"artifact:{artifact.id}",
                    )
                )
    return runs


def _warn(message: str) -> None:
    """One line, bounded: the text comes from an uploaded file, and a newline would start a new
    workflow command in the job's log."""
    print(f"::warning::runs-per-day count: {' '.join(message.split())[:300]}", file=sys.stderr)


def _opened_by_team(repo: Repository, number: int, team: str, roster: Roster, seen: dict[int, bool]) -> bool:
    if number not in seen:
        try:
            author = repo.get_pull(number).user.login
        except GithubException:
            author = ""
        seen[number] = team in roster.teams_of(author)
    return seen[number]
