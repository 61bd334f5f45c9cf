"""Which team and assignment a result is filed under: the folder's, never the manifest's word alone.

A result names its team and assignment from the student's submission.yaml; where a submission
was found (the PR's approved folder, or the stored run being regraded) is the trusted fact. Both
the PR publisher and the regrade use this, so a manifest naming another team can never put a
grade on that team's row.
"""

from __future__ import annotations

from grader.contracts.result import AssignmentRef, CheckStatus, Problem, Result


def keyed_to_folder(result: Result, team: str, assignment: str) -> Result:
    """The result filed under the folder the policy approved.

    A result that is not ``graded`` keeps its problems and is re-keyed (an unreadable manifest
    leaves no trustworthy team or assignment in it). A graded result whose submission.yaml names
    another team or assignment is the student's mistake: it becomes ``rejected`` with the fix.
    """
    matches = result.submission.team == team and result.assignment.id == assignment
    if matches:
        return result
    submission = result.submission.model_copy(update={"team": team})
    ref = AssignmentRef(id=assignment, version=result.assignment.version)
    if result.status != "graded":
        return result.model_copy(update={"submission": submission, "assignment": ref})
    problem = Problem(
        kind="manifest",
        field="team",
        message=f"submission.yaml says team '{result.submission.team}' and assignment "
        f"'{result.assignment.id}', but the folder is submissions/{team}/{assignment}/.",
        hint="Make 'team' and 'assignment' in submission.yaml match the folder names.",
    )
    checks = [
        c.model_copy(
            update={
                "status": CheckStatus.SKIPPED,
                "points": 0.0,
                "evidence": {},
                "message": "Not graded: submission.yaml does not match its folder.",
            }
        )
        for c in result.checks
    ]
    return result.model_copy(
        update={
            "status": "rejected",
            "score": 0.0,
            "checks": checks,
            "problems": [problem],
            "metrics": {},
            "submission": submission,
            "assignment": ref,
        }
    )
