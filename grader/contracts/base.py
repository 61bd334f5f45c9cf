"""What every shape shares: strict models (an unknown field is an error, never silently dropped)
and the names that cross stages (teams, GitHub logins, assignment ids).

Everything under ``grader.contracts`` is data, validated where it crosses a boundary; nothing
here imports an implementation.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints


class Strict(BaseModel):
    """Unknown fields are an error: a reader must not silently accept what it did not ask for."""

    model_config = ConfigDict(extra="forbid")


TeamName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=39)]
GitHubLogin = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", max_length=39)]
AssignmentId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]
