"""A sweep run for real: worker processes (and Ray), the command line's table and files, a
second run that skips what finished, and an interrupted run that resumes to the same end."""

import json
import os
import subprocess
import sys

import pytest

from fedstream import simulate
from fedstream.sweep import run_sweep, sweep_from_mapping
from fedstream.sweep.execute import finished

pytestmark = pytest.mark.slow  # whole runs in worker processes

SETTINGS = {
    "seeds": [0],
    "grid": {"client.lr": [0.1, 0.3]},
    "data": {"num_clients": 10},
    "run": {"rounds": 3, "clients_per_round": 5},
}


def final_params_digest(folder):
    return json.loads((folder / "results.json").read_text())["final_metrics"]


def test_an_interrupted_sweep_resumes_and_ends_where_an_uninterrupted_one_does(tmp_path):
    sweep = sweep_from_mapping(SETTINGS)
    name, arm, seed = sweep.runs()[1]
    # as if the sweep had been stopped after round 1 of its last run
    partial = sweep.config(arm, seed).with_changes(run={"rounds": 1}, execution={"threads": 1})
    simulate(
        partial, output_dir=tmp_path / "stopped" / name, store=tmp_path / "stopped" / "store.sqlite"
    )
    assert finished(tmp_path / "stopped" / name, 1) and not finished(tmp_path / "stopped" / name, 3)
    seen = []
    run_sweep(
        sweep, tmp_path / "stopped", workers=2, on_done=lambda run, what: seen.append((run, what))
    )
    assert dict(seen)[name] == "resumed" and sorted(seen)[0] == ("00-lr0.1-seed0", "ran")
    run_sweep(sweep, tmp_path / "straight", workers=2)
    for run, _, _ in sweep.runs():
        resumed = json.loads((tmp_path / "stopped" / run / "results.json").read_text())
        straight = json.loads((tmp_path / "straight" / run / "results.json").read_text())
        assert len(resumed["rounds"]) == 3
        assert resumed["final_metrics"] == straight["final_metrics"]  # same seed, same end
    again = []
    run_sweep(sweep, tmp_path / "stopped", workers=2, on_done=lambda run, what: again.append(what))
    assert again == ["already done"] * 2


def test_the_command_line_prints_the_table_and_writes_the_summary_and_plot(tmp_path):
    (tmp_path / "lr.toml").write_text(
        'seeds = [0, 1]\n\n[grid]\n"client.lr" = [0.1, 0.3]\n\n'
        "[data]\nnum_clients = 10\n\n[run]\nrounds = 2\nclients_per_round = 5\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "fedstream.cli", "sweep", str(tmp_path / "lr.toml"),
         "--output", str(tmp_path / "out"), "--workers", "2"],
        capture_output=True, text=True, timeout=600, env=os.environ | {"COLUMNS": "160"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [arm["arm"] for arm in summary] == ["client.lr=0.1", "client.lr=0.3"]
    for arm in summary:
        assert f"{arm['median']:.4f}" in done.stdout and arm["seeds"] == [0, 1]
        assert arm["low"] <= arm["median"] <= arm["high"]
    assert (tmp_path / "out" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(done.stdout.split())
    assert "central_accuracy after the last round, over seeds [0, 1]" in text


@pytest.mark.ray
def test_a_sweep_runs_on_ray_as_it_does_on_processes(tmp_path):
    settings = SETTINGS | {"grid": {"client.lr": [0.3]}}
    sweep = sweep_from_mapping(settings)
    run_sweep(sweep, tmp_path / "ray", workers=1, executor="ray")
    run_sweep(sweep, tmp_path / "processes", workers=1)
    ((name, _, _),) = sweep.runs()
    assert final_params_digest(tmp_path / "ray" / name) == final_params_digest(
        tmp_path / "processes" / name
    )
