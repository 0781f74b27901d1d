"""The dashboard's data: what the page shows of each run, read from a real run store."""

import pytest

import fedstream
from fedstream.dashboard import run_view, runs_view
from fedstream.errors import ConfigError
from fedstream.store.runs import RunStore


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    fedstream.simulate(
        app="tests.dashboard.broken_site:app",
        output_dir=root / "broken",
        run={"rounds": 3, "clients_per_round": 4},
    )
    fedstream.simulate(
        output_dir=root / "private",
        data={"num_clients": 6}, run={"rounds": 2, "clients_per_round": 3},
        privacy={"level": "client", "noise": 1.0},
    )  # fmt: skip
    return RunStore(root / "store.sqlite")


def test_the_runs_table_names_each_run_its_strategy_data_and_last_result(store):
    rows = {row["id"]: row for row in runs_view(store)}
    assert list(rows) == ["private", "broken"]  # newest first
    private, broken = rows["private"], rows["broken"]
    assert (private["status"], private["rounds_done"], private["rounds"]) == ("finished", 2, 2)
    assert private["label"] == "fedavg + DP (client)" and private["data"] == "digits"
    epsilon = private["last_metrics"]["dp_epsilon"]
    accuracy = private["last_metrics"]["central_accuracy"]
    assert private["headline"] == f"acc {accuracy:.3f}, ε {epsilon:.2f}"
    assert broken["data"] == "tests.dashboard.broken_site:app"


def test_a_run_shows_every_round_its_failures_clients_and_models(store):
    run = run_view(store, "broken")
    assert [r["round"] for r in run["rounds"]] == [1, 2, 3]
    for row in run["rounds"]:
        assert (row["sampled"], row["completed"]) == (4, 3)
        assert row["failures"] == [
            {"client_id": "site-2", "stage": "validate", "cause": "payload contains NaN or Inf"}
        ]
        assert row["bytes_up"] > 0 and row["seconds"] > 0
    assert sorted(run["clients"]) == ["site-0", "site-1", "site-2", "site-3"]
    assert run["clients"]["site-0"]["round"] == 3 and "accuracy" in run["clients"]["site-0"]
    assert [m["version"] for m in run["models"]] == [1, 2, 3]
    assert ["run.rounds", 3] in run["settings"] and ["run.clients_per_round", 4] in run["settings"]


def test_an_unknown_run_names_the_ones_there_are(store):
    with pytest.raises(ConfigError, match=r"run='nope' is invalid: expected one of the runs"):
        run_view(store, "nope")


def test_an_app_object_is_named_by_its_own_name_not_the_default_data_set(tmp_path):
    from tests.apps.tiny import app as tiny

    fedstream.simulate(
        app=tiny, output_dir=tmp_path / "mine",
        run={"rounds": 1, "clients_per_round": 3}, client={"batch_size": 8},
    )  # fmt: skip
    (row,) = runs_view(RunStore(tmp_path / "store.sqlite"))
    assert row["data"] == "tiny-cnn"


def test_a_store_made_before_runs_named_their_data_is_upgraded_in_place(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the runs table as it was
        db.execute(
            "CREATE TABLE runs (id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT "
            "NULL, status TEXT NOT NULL, config TEXT NOT NULL, output_dir TEXT, rounds_done "
            "INTEGER NOT NULL DEFAULT 0, error TEXT)"
        )
        db.execute("INSERT INTO runs VALUES ('old', 1.0, 1.0, 'finished', '{}', NULL, 3, NULL)")
    store = RunStore(path)
    (row,) = runs_view(store)
    assert (row["id"], row["rounds_done"], row["data"]) == ("old", 3, "")
    store.start_run("new", {}, None, "digits")
    assert {r["id"]: r["data"] for r in runs_view(store)} == {"old": "", "new": "digits"}
