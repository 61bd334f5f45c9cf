"""What the bot says outside a result report: a policy refusal, and the commit status line."""

from __future__ import annotations

from markupsafe import Markup

from grader.ci.admission import Decision
from grader.contracts.result import Result
from grader.report.render import MARKER_PREFIX, render_markdown_template

POLICY_MARKER = f"<!-- {MARKER_PREFIX}:v1 policy -->"
STATUS_CONTEXT = "compression-grader"
POLICY_STATUS_CONTEXT = f"{STATUS_CONTEXT}/policy"


def render_refusal(decision: Decision) -> str:
    """The policy comment: why the PR is refused, or (once fixed) that the rules are met."""
    return render_markdown_template(
        "refusal.md.j2",
        marker=Markup(POLICY_MARKER),
        refusals=decision.refusals,
        limited=decision.verdict == "limited",
        assignment=decision.assignment,
        author=decision.author,
        author_teams=decision.author_teams,
        head_sha=decision.head_sha,
    )


def status_context(assignment: str) -> str:
    return f"{STATUS_CONTEXT}/{assignment}"


def result_status(result: Result) -> tuple[str, str]:
    """(state, description) of the commit status for a result."""
    if result.status == "graded":
        return "success", f"Graded: {result.score:g} / {result.max_score:g} points"
    if result.status == "rejected":
        return "failure", "Not graded: the PR comment says what to fix"
    return "error", "Grader error, not charged to you: course staff will look"


def refusal_status(decision: Decision | None = None) -> tuple[str, str]:
    if decision is not None and decision.verdict == "limited":
        return "failure", "Not graded: today's runs of this assignment are used up (see the comment)"
    return "failure", "Not graded: this PR breaks the submission rules (see the comment)"
