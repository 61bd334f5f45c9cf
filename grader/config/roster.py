"""``roster.yaml``: which GitHub logins belong to which team (read from the base branch only).

The PR policy (a PR may touch only its author's team folder) and the gradebook (students x
assignments) both read it; it is staff-written, so errors are ``ConfigError``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import ConfigDict, StringConstraints, ValidationError

from grader.config.paths import REPO_ROOT
from grader.contracts.base import GitHubLogin, Strict, TeamName
from grader.errors import ConfigError

ROSTER_FILE = "roster.yaml"
# libyaml's safe loader when PyYAML has it (same rules, ~10x faster: the gradebook reads every file)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Member(Strict):
    github: GitHubLogin
    name: Annotated[str, StringConstraints(max_length=200)] = ""
    student_id: Annotated[str, StringConstraints(max_length=64)] = ""
    email: Annotated[str, StringConstraints(max_length=254)] = ""


class Team(Strict):
    members: list[Member]
    staff: bool = False


class Roster(Strict):
    schema_: int = 1
    teams: dict[TeamName, Team]

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def logins(self, team: str) -> list[str]:
        found = self.teams.get(team)
        return [m.github for m in found.members] if found else []

    def teams_of(self, login: str) -> list[str]:
        """Teams a login belongs to (GitHub logins are case-insensitive)."""
        wanted = login.lower()
        return [name for name, team in self.teams.items() if any(m.github.lower() == wanted for m in team.members)]


def default_roster_path() -> Path:
    """``$GRADER_ROSTER`` or the repository's own ``roster.yaml`` (next to ``assignments/``)."""
    env = os.environ.get("GRADER_ROSTER")
    return Path(env) if env else REPO_ROOT / ROSTER_FILE


def load_roster(path: Path) -> Roster:
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=SAFE_LOADER)
        return Roster.model_validate({"schema_": data.pop("schema", 1), **data} if isinstance(data, dict) else data)
    except (OSError, yaml.YAMLError, ValidationError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
