"""The agreed wire format of ``POST /process`` and ``GET /health`` (documented for students).

Request:  ``{"id": "<string>", "input": <nested list of floats, one sample>}``
Response: ``{"id": "<same string>", "label": <int class>}`` (extra fields are allowed and ignored)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from grader.contracts.base import Strict

PROCESS_PATH = "/process"
HEALTH_PATH = "/health"
SOCKET_ENV = "GRADER_SOCKET"


class ProcessRequest(Strict):
    id: str = Field(max_length=64)
    input: list


class ProcessResponse(BaseModel):
    """What the grader accepts back; anything else counts as a malformed answer."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(max_length=64)
    label: int
