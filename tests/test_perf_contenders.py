"""The performance comparison's contenders (benchmarks/perf/) do the same arithmetic:
the plain loop, the compute floor and both fedstream trainers end a short version of each
workload at the same accuracy, dropout masks and batch norm included. Speed is measured
in the benchmarks, never here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

PERF = Path(__file__).resolve().parent.parent / "benchmarks" / "perf"
sys.path.insert(0, str(PERF))
import workloads  # noqa: E402
from run import run_fedstream  # noqa: E402

pytestmark = pytest.mark.slow  # a process per contender


@pytest.mark.parametrize(("workload", "rounds"), [("W1", 4), ("W4", 2)])
def test_every_contender_ends_a_short_workload_at_the_same_accuracy(
    tmp_path, monkeypatch, workload, rounds
):
    short = {**workloads.WORKLOADS[workload]}
    short["run"] = {**short["run"], "rounds": rounds}
    monkeypatch.setitem(workloads.WORKLOADS, workload, short)
    exported = tmp_path / f"{workload}.npz"
    workloads.export(workload, exported)
    accuracies = {
        kind: run_fedstream(workload, kind)["final_accuracy"]
        for kind in ("sequential", "vectorized")
    }
    for script in ("plain_loop.py", "floor_loop.py"):
        out = subprocess.run(
            [sys.executable, str(PERF / script), str(exported)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        figures = json.loads(out.strip().splitlines()[-1])
        assert figures["client_updates"] == rounds * short["run"]["clients_per_round"]
        accuracies[script] = figures["final_accuracy"]
    assert len(set(accuracies.values())) == 1, accuracies
    assert accuracies["plain_loop.py"] > 0.1  # chance is 0.1: they trained
