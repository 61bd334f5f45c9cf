from pathlib import Path

import pytest

from grader.config.roster import load_roster
from grader.errors import ConfigError


def test_shipped_roster_loads() -> None:
    roster = load_roster(Path(__file__).resolve().parent.parent / "roster.yaml")
    assert roster.teams["course-staff"].staff is True


def test_teams_of_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "roster.yaml"
    path.write_text(
        "schema: 1\nteams:\n  team-alpha:\n    members:\n      - {github: OctoCat, name: Mona}\n"
        "  team-beta:\n    members:\n      - {github: hubot}\n"
    )
    roster = load_roster(path)
    assert roster.teams_of("octocat") == ["team-alpha"]
    assert roster.logins("team-beta") == ["hubot"] and roster.logins("nobody") == []


@pytest.mark.parametrize(
    "text",
    [
        "teams:\n  Bad_Team:\n    members: []\n",
        "teams: [1, 2]\n",
        "teams:\n  ok:\n    members:\n      - {github: x, phone: 1}\n",
    ],
)
def test_bad_rosters_are_config_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "roster.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_roster(path)
