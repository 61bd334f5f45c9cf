"""Search logs (hw5): real Optuna studies and their exports, read as hostile data; Pareto maths."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from grader.checks.pareto import dominates, dominators, pareto_front
from grader.worker import searchlog
from grader.worker.searchlog import SearchLogError, read_search_log

optuna = pytest.importorskip("optuna", reason="optuna (the dev extra) writes the real studies these tests read")


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    amount = trial.suggest_float("amount", 0.0, 0.9)
    weights = trial.suggest_categorical("weights", ["int8", "fp32"])
    trial.suggest_int("epochs", 0, 3)
    if trial.number == 3:
        raise optuna.TrialPruned()
    return 1.0 - amount**2, (1.0 - amount) * (4.0 if weights == "fp32" else 1.0)


def make_study(path: Path, name: str = "hw5", trials: int = 8) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=f"sqlite:///{path}",
        study_name=name,
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.set_metric_names(["accuracy", "size_mb"])
    study.optimize(_objective, n_trials=trials)
    return study


@pytest.fixture(scope="module")
def study_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("study")
    study = make_study(folder / "study.db")
    frame = study.trials_dataframe()
    frame.to_csv(folder / "trials.csv", index=False)
    frame.to_json(folder / "trials.json", orient="records", date_format="iso")
    frame.to_json(folder / "trials-epoch.json", orient="records")  # pandas' default: epoch milliseconds
    return {
        "sqlite": folder / "study.db",
        "csv": folder / "trials.csv",
        "json": folder / "trials.json",
        "json-epoch": folder / "trials-epoch.json",
        "expected": study,
    }


@pytest.mark.parametrize("fmt", ["sqlite", "csv", "json", "json-epoch"])
def test_every_form_reads_the_same_trials(study_files: dict, fmt: str) -> None:
    study = study_files["expected"]
    log = read_search_log(study_files[fmt], fmt.split("-")[0])
    assert log.objectives == ["accuracy", "size_mb"]
    assert [t.number for t in log.trials] == [t.number for t in study.trials]
    assert [t.state for t in log.trials].count("PRUNED") == 1
    assert len(log.complete()) == len(study.trials) - 1
    for ours, theirs in zip(log.complete(), [t for t in study.trials if t.values]):
        assert ours.values == pytest.approx(theirs.values, rel=1e-9)
        assert ours.params["weights"] == theirs.params["weights"]  # categorical decoded from its index
        assert ours.params["epochs"] == theirs.params["epochs"] and isinstance(ours.params["epochs"], int)
        # study.optimize timed every trial; JSON keeps milliseconds
        assert ours.clocked() and ours.duration_s == pytest.approx(theirs.duration.total_seconds(), abs=2e-3)
    if fmt == "sqlite":
        assert log.directions == ["maximize", "minimize"] and log.study == "hw5"


def test_trials_made_with_create_trial_read_as_taking_no_time(tmp_path: Path) -> None:
    """``optuna.trial.create_trial`` + ``study.add_trial`` (a study written by hand, not searched)
    logs the same instant as start and completion, in every form the log can take."""
    from optuna.distributions import FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'made.db'}", directions=["maximize", "minimize"])
    for i in range(4):
        trial = optuna.trial.create_trial(
            params={"amount": i / 10}, distributions={"amount": FloatDistribution(0, 1)}, values=[1 - i / 10, 1.0]
        )
        study.add_trial(trial)
    frame = study.trials_dataframe()
    frame.to_csv(tmp_path / "made.csv", index=False)
    frame.to_json(tmp_path / "made.json", orient="records")
    for path, fmt in (
        (tmp_path / "made.db", "sqlite"),
        (tmp_path / "made.csv", "csv"),
        (tmp_path / "made.json", "json"),
    ):
        trials = read_search_log(path, fmt).complete()
        assert len(trials) == 4 and all(t.duration_s == 0 and not t.clocked() for t in trials), fmt


def test_a_log_without_times_has_no_durations(tmp_path: Path) -> None:
    path = tmp_path / "bare.csv"
    path.write_text("number,values_0,values_1,state\n0,0.9,1.0,COMPLETE\n")
    (trial,) = read_search_log(path, "csv").trials
    assert trial.duration_s is None and not trial.clocked()


def test_the_sqlite_file_is_opened_read_only_and_left_untouched(study_files: dict, tmp_path: Path) -> None:
    copy = tmp_path / "ro" / "study.db"
    copy.parent.mkdir()
    copy.write_bytes(study_files["sqlite"].read_bytes())
    before = hashlib.sha256(copy.read_bytes()).hexdigest()
    copy.chmod(0o444)
    copy.parent.chmod(0o555)  # no journal or lock file can be created next to it
    try:
        assert len(read_search_log(copy, "sqlite").trials) == 8
    finally:
        copy.parent.chmod(0o755)
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in copy.parent.iterdir()) == ["study.db"]


def test_several_studies_need_a_name(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    make_study(path, "first", trials=2)
    make_study(path, "second", trials=3)
    with pytest.raises(SearchLogError, match="2 studies.*first, second.*claims"):
        read_search_log(path, "sqlite")
    assert len(read_search_log(path, "sqlite", study="second").trials) == 3
    with pytest.raises(SearchLogError, match="no study named 'third'"):
        read_search_log(path, "sqlite", study="third")


def test_an_sqlite_file_that_is_not_an_optuna_study_says_so(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE results (trial INTEGER, accuracy REAL)")
    with pytest.raises(SearchLogError, match="not an Optuna"):
        read_search_log(path, "sqlite")


def test_a_runaway_query_in_a_hostile_file_is_stopped(tmp_path: Path) -> None:
    """A view posing as Optuna's studies table yields rows forever; the step budget ends the read."""
    path = tmp_path / "hostile.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE VIEW studies AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
            "SELECT x AS study_id, 'a' || x AS study_name FROM c"
        )
    with pytest.raises(SearchLogError, match="interrupted"):
        read_search_log(path, "sqlite")


def test_malformed_exports_get_messages_that_say_what_is_wrong(tmp_path: Path, monkeypatch) -> None:
    cases = {
        "no_state.csv": ("number,values_accuracy,values_size_mb\n0,0.9,1.0\n", "'state'"),
        "no_objectives.csv": ("number,state,params_x\n0,COMPLETE,1\n", "objective columns"),
        "bad_state.csv": ("number,state,values_a,values_b\n0,DONE,1,2\n", "unknown trial state"),
        "object.json": (json.dumps({"number": 0}), "list of trial records"),
        "broken.json": ("[{", "cannot be parsed"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(SearchLogError, match=message):
            read_search_log(path, name.rsplit(".", 1)[1])
    (tmp_path / "latin1.csv").write_bytes("number,state,values_é\n".encode("latin-1"))
    with pytest.raises(SearchLogError, match="UTF-8"):
        read_search_log(tmp_path / "latin1.csv", "csv")
    monkeypatch.setattr(searchlog, "MAX_TRIALS", 3)
    rows = "".join(f"{i},COMPLETE,0.5,1\n" for i in range(5))
    (tmp_path / "many.csv").write_text("number,state,values_a,values_b\n" + rows)
    with pytest.raises(SearchLogError, match="more than 3 trials"):
        read_search_log(tmp_path / "many.csv", "csv")


def test_unnamed_objectives_and_non_finite_values_are_kept_as_such(tmp_path: Path) -> None:
    path = tmp_path / "unnamed.csv"
    path.write_text("number,values_0,values_1,state\n0,0.9,inf,COMPLETE\n1,0.8,2.0,COMPLETE\n2,,,FAIL\n")
    log = read_search_log(path, "csv")
    assert log.objectives == ["", ""]
    assert log.trials[0].values == [0.9, None]  # inf is not a comparable objective value
    assert [t.number for t in log.complete()] == [1]


# --------------------------------------------------------------------------- Pareto


def test_dominance_and_front_with_mixed_directions() -> None:
    directions = ["maximize", "minimize"]  # accuracy up, size down
    points = {0: [0.90, 1.0], 1: [0.95, 2.0], 2: [0.85, 1.5], 3: [0.95, 2.0], 4: [0.80, 0.5]}
    assert dominates(points[0], points[2], directions)
    assert not dominates(points[1], points[3], directions)  # equal points do not dominate each other
    assert pareto_front(points, directions) == [0, 1, 3, 4]


def test_tolerance_gives_a_point_within_noise_the_benefit_of_the_doubt() -> None:
    directions = ["maximize", "minimize"]
    logged = {0: [0.95, 1.0], 1: [0.90, 0.5]}
    just_behind = [0.948, 1.0]
    assert dominators(just_behind, [0.0, 0.0], logged, directions) == [0]
    assert dominators(just_behind, [0.005, 0.0], logged, directions) == []
    assert dominators([0.80, 2.0], [0.005, 0.01], logged, directions) == [0, 1]
