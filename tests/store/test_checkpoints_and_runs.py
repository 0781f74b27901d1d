"""Checkpoints, the SQLite run store, and exact resume, in process and after a real kill -9."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from fedstream import ConfigError, simulate
from fedstream.cli import main
from fedstream.privacy import PrivacyLedger
from fedstream.simulation import from_mapping
from fedstream.store import (
    CheckpointError,
    RunStore,
    StoreError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from fedstream.store.checkpoint import load_client_states
from tests.settings import nested

# FedAdam (optimiser moments), adaptive DP clipping (clip bound, ledger, noise drawn from the
# run's generator) and client sampling: every part of ServerState moves each round.
STATEFUL = dict(
    num_clients=12, clients_per_round=5, local_epochs=1, partition="iid", strategy="fedadam",
    dp="client", dp_noise=0.3, dp_adaptive_clip=True, dp_clip=0.1, dp_secure_noise=False,
)  # fmt: skip


def test_a_checkpoint_round_trips_every_part_of_the_state(tmp_path):
    result = simulate(**nested(rounds=2, **STATEFUL))
    state, report = result.state, result.reports[-1]
    folder = save_checkpoint(tmp_path, state, report)
    assert folder.name == "round-000002"
    loaded, loaded_report = load_checkpoint(folder)
    assert loaded.round == 2 and loaded.params.bit_equal(state.params)
    assert set(loaded.optimizer) == {"m", "v"}
    assert all(loaded.optimizer[k].bit_equal(state.optimizer[k]) for k in ("m", "v"))
    assert loaded.accountant == state.accountant
    assert isinstance(loaded.accountant["client"], PrivacyLedger)
    assert loaded.clip_norm == state.clip_norm and loaded.rng_state == state.rng_state
    assert loaded.generator().integers(1 << 60) == state.generator().integers(1 << 60)
    assert loaded_report == report
    # params.safetensors opens in the safetensors library itself
    from safetensors.numpy import load_file

    on_disk = load_file(str(folder / "params.safetensors"))
    assert all(np.array_equal(on_disk[n], state.params[n]) for n in state.params)


def test_old_checkpoints_are_pruned_and_partial_ones_ignored(tmp_path):
    state = simulate(**nested(rounds=1, num_clients=6, clients_per_round=2, local_epochs=1)).state
    for number in range(1, 6):
        save_checkpoint(tmp_path, state.evolve(round=number), keep=2)
    assert sorted(p.name for p in tmp_path.glob("round-*")) == ["round-000004", "round-000005"]
    (tmp_path / ".partial-crashed").mkdir()  # what a crash mid-write leaves
    (tmp_path / "round-000009").mkdir()  # no state.json: never completed
    assert latest_checkpoint(tmp_path) == tmp_path / "round-000005"
    assert latest_checkpoint(tmp_path / "nothing-here") is None


def test_an_altered_or_truncated_checkpoint_is_refused(tmp_path):
    state = simulate(**nested(rounds=1, num_clients=6, clients_per_round=2, local_epochs=1)).state
    folder = save_checkpoint(tmp_path, state)
    data = (folder / "params.safetensors").read_bytes()
    (folder / "params.safetensors").write_bytes(data[:-4])
    with pytest.raises(CheckpointError, match=r"params.safetensors does not match its SHA-256"):
        load_checkpoint(folder)
    (folder / "params.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"params.safetensors is missing"):
        load_checkpoint(folder)
    (folder / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"state.json is not JSON"):
        load_checkpoint(folder)


def test_a_resumed_run_ends_bit_for_bit_where_an_uninterrupted_one_does(tmp_path):
    straight = simulate(**nested(rounds=6, **STATEFUL))
    first = simulate(output_dir=tmp_path / "run", **nested(rounds=3, **STATEFUL))
    assert first.state.round == 3
    resumed = simulate(output_dir=tmp_path / "run", resume=True, **nested(rounds=6))
    assert resumed.state.params.bit_equal(straight.state.params)
    assert resumed.state.optimizer["v"].bit_equal(straight.state.optimizer["v"])
    assert resumed.state.clip_norm == straight.state.clip_norm
    assert [r.metrics for r in resumed.reports] == [r.metrics for r in straight.reports]
    run = RunStore(tmp_path / "store.sqlite").run("run")
    assert run["status"] == "finished" and run["rounds_done"] == 6
    assert [r["round"] for r in run["rounds"]] == [1, 2, 3, 4, 5, 6]
    document = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(document["rounds"]) == 6


def test_a_resume_with_error_feedback_continues_every_clients_residual(tmp_path):
    # each client's top-k residual is part of the checkpoint (before, 3 rounds and a resume
    # to 6 ended at 0.4986 against 0.4930 uninterrupted)
    straight = simulate(**nested(rounds=6, compression="topk:0.05"))
    simulate(output_dir=tmp_path / "run", **nested(rounds=3, compression="topk:0.05"))
    folder = latest_checkpoint(tmp_path / "run" / "checkpoints")
    saved = load_client_states(folder)
    assert len(saved) > 20 and all(set(s) == {"residual"} for s in saved.values())
    resumed = simulate(output_dir=tmp_path / "run", resume=True, **nested(rounds=6))
    assert resumed.state.params.bit_equal(straight.state.params)
    assert resumed.final_metrics["central_accuracy"] == straight.final_metrics["central_accuracy"]
    folder = latest_checkpoint(tmp_path / "run" / "checkpoints")
    (folder / "clients.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointError, match=r"clients\.safetensors does not match its SHA-256"):
        load_client_states(folder)


def test_a_round_checkpointed_but_not_stored_is_recovered_from_the_checkpoint(tmp_path):
    simulate(output_dir=tmp_path / "run", **nested(rounds=3, **STATEFUL))
    with sqlite3.connect(tmp_path / "store.sqlite") as db:  # as if killed between the two
        db.execute("DELETE FROM rounds WHERE round = 3")
        db.execute("DELETE FROM metrics WHERE round = 3")
    resumed = simulate(output_dir=tmp_path / "run", resume=True, **nested(rounds=4))
    rounds = RunStore(tmp_path / "store.sqlite").run("run")["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert [r.round for r in resumed.reports] == [1, 2, 3, 4]


def test_bad_resumes_say_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match=r"resume=.* a run folder with config.json"):
        simulate(output_dir=tmp_path / "empty", resume=True)
    with pytest.raises(ConfigError, match="resume=True is invalid: expected an output_dir"):
        simulate(resume=True)
    simulate(output_dir=tmp_path / "run", **nested(rounds=1, num_clients=6, clients_per_round=2))
    with pytest.raises(ConfigError, match=r"lr=0.1 is invalid: expected 0.3, the value the"):
        simulate(output_dir=tmp_path / "run", resume=True, **nested(lr=0.1))
    # a checkpoint from another model is refused, not loaded into the wrong shapes
    other = simulate(**nested(rounds=1, num_clients=6, clients_per_round=2, model="linear")).state
    save_checkpoint(tmp_path / "run" / "checkpoints", other.evolve(round=7))
    with pytest.raises(CheckpointError, match=r"checkpoint .*round-000007"):
        simulate(output_dir=tmp_path / "run", resume=True, **nested(rounds=9))


def test_runs_list_and_show_read_the_store(tmp_path):
    simulate(output_dir=tmp_path / "alpha", **nested(rounds=2, num_clients=6, clients_per_round=2))
    store = str(tmp_path / "store.sqlite")
    runner = CliRunner()
    listed = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["runs", "list", "--store", store])
    assert listed.exit_code == 0 and "alpha" in listed.output and "finished" in listed.output
    row = next(line for line in listed.output.splitlines() if "alpha" in line)
    assert all(cell in row for cell in ("fedavg", "digits", "2")), row  # rounds, of, …
    shown = runner.invoke(main, ["runs", "show", "alpha", "--store", store, "--json"])
    assert shown.exit_code == 0
    run = json.loads(shown.output)
    assert run["rounds_done"] == 2 and "central_accuracy" in run["rounds"][-1]["metrics"]
    table = runner.invoke(main, ["runs", "show", "alpha", "--store", store])
    accuracy = run["rounds"][-1]["metrics"]["central_accuracy"]
    assert table.exit_code == 0 and f"{accuracy:.4f}" in table.output
    assert "finished, 2 of 2 rounds" in table.output  # the planned rounds, from [run]
    unknown = runner.invoke(main, ["runs", "show", "beta", "--store", store])
    assert unknown.exit_code == 2 and "run='beta' is invalid" in unknown.output
    assert "['alpha']" in unknown.output
    missing = runner.invoke(main, ["runs", "list", "--store", str(tmp_path / "no.sqlite")])
    assert missing.exit_code == 2 and "no run store" in missing.output


def test_runs_list_names_each_runs_privacy_and_codec_and_its_last_result(tmp_path):
    small = dict(rounds=2, num_clients=6, clients_per_round=2)
    private = simulate(output_dir=tmp_path / "dp", **nested(dp="client", noise=1.0, **small))
    compressed = simulate(output_dir=tmp_path / "q8", **nested(codec="q8", **small))
    store = str(tmp_path / "store.sqlite")
    listed = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["runs", "list", "--store", store])
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[1]: line for line in listed.output.splitlines() if "finished" in line}
    dp_metrics = private.reports[-1].metrics
    assert "fedavg + DP (client)" in rows["dp"]
    assert (
        f"acc {dp_metrics['central_accuracy']:.3f}, ε {dp_metrics['dp_epsilon']:.2f}" in rows["dp"]
    )
    assert "fedavg + q8" in rows["q8"]
    assert f"acc {compressed.reports[-1].metrics['central_accuracy']:.3f}" in rows["q8"]
    shown = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["runs", "show", "q8", "--store", store])
    cells = [line.split() for line in shown.output.splitlines() if line.startswith("│ ")]
    settings = {row[1]: row[3] for row in cells if len(row) == 5}
    assert settings == {
        "data.num_clients": "6", "run.rounds": "2", "run.clients_per_round": "2",
        "compression.codec": '"q8"',
    }  # fmt: skip
    compared = CliRunner(env={"COLUMNS": "200"}).invoke(
        main, ["runs", "compare", "dp", "q8", "--store", store, "--plot", str(tmp_path / "c.png")]
    )
    assert compared.exit_code == 0, compared.output
    cells = [[t for t in line.split() if t != "│"] for line in compared.output.splitlines()]
    rows = {row[0]: row[1:] for row in cells if len(row) in (2, 3)}
    accuracy = [f"{r.reports[-1].metrics['central_accuracy']:.4f}" for r in (private, compressed)]
    assert rows["central_accuracy"] == accuracy and rows["rounds"] == ["2", "2"]
    assert rows["dp_epsilon"][0] == f"{dp_metrics['dp_epsilon']:.4f}"
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    unknown = CliRunner().invoke(main, ["runs", "compare", "dp", "nope", "--store", store])
    assert unknown.exit_code == 2 and "run='nope' is invalid" in unknown.output


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    flags = [
        "--data.num-clients", "12", "--run.clients-per-round", "5", "--client.local-epochs", "20",
        "--data.partition", "iid", "--strategy.name", "fedadam", "--privacy.level", "client",
        "--privacy.noise", "0.3", "--privacy.secure-noise", "false", "--run.rounds", "12",
        "--quiet",
    ]  # fmt: skip
    out = tmp_path / "run"
    command = [sys.executable, "-m", "fedstream.cli", "run", *flags, "--output", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while (
        latest_checkpoint(out / "checkpoints") is None
        or latest_checkpoint(out / "checkpoints").name < "round-000004"
    ):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = latest_checkpoint(out / "checkpoints")
    assert killed_at is not None and killed_at.name < "round-000012"
    assert RunStore(tmp_path / "store.sqlite").run("run")["status"] == "running"
    resumed = subprocess.run(
        [sys.executable, "-m", "fedstream.cli", "run", "--resume", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    final, _ = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    config = from_mapping(json.loads((out / "config.json").read_text()))
    straight = simulate(config)
    assert final.round == 12 and final.params.bit_equal(straight.state.params)
    run = RunStore(tmp_path / "store.sqlite").run("run")
    assert run["status"] == "finished"
    assert [r["round"] for r in run["rounds"]] == list(range(1, 13))


@pytest.mark.slow  # a whole run or a process, seconds
def test_a_damaged_newest_checkpoint_is_passed_over_with_the_reason(tmp_path, caplog):
    straight = simulate(**nested(rounds=6, compression="topk:0.05"))
    simulate(output_dir=tmp_path / "run", **nested(rounds=4, compression="topk:0.05"))
    checkpoints = tmp_path / "run" / "checkpoints"
    newest = latest_checkpoint(checkpoints)
    assert newest is not None and newest.name == "round-000004"
    damaged = newest / "params.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"params\.safetensors does not match its SHA-256"):
        load_checkpoint(newest)  # the cause, not "state.json lacks a field"
    with caplog.at_level("WARNING", logger="fedstream.store"):
        resumed = simulate(output_dir=tmp_path / "run", resume=True, **nested(rounds=6))
    said = caplog.text
    assert "round-000004" in said and "does not match its SHA-256" in said
    assert "resuming from round-000003 (round 3)" in said
    # round 3's state and its clients' residuals: the run still ends where it would have
    assert resumed.state.params.bit_equal(straight.state.params)
    for folder in checkpoints.glob("round-*"):  # with every checkpoint damaged, say so
        (folder / "params.safetensors").write_bytes(b"broken")
    with pytest.raises(CheckpointError, match="no intact checkpoint to resume from"):
        simulate(output_dir=tmp_path / "run", resume=True, **nested(rounds=8))


def test_a_corrupt_run_store_is_named_with_how_to_recover(tmp_path):
    simulate(output_dir=tmp_path / "run", **nested(rounds=1))
    store = tmp_path / "store.sqlite"
    store.write_bytes(b"this is not a SQLite database, it was overwritten " * 200)
    for wal in tmp_path.glob("store.sqlite-*"):
        wal.unlink()
    listed = CliRunner().invoke(main, ["runs", "list", "--store", str(store)])
    assert listed.exit_code == 1 and "Traceback" not in listed.output
    assert f"the run store {store} cannot be read" in listed.output
    assert "--resume" in listed.output  # and how to go on: the checkpoints hold the state
    with pytest.raises(StoreError, match="cannot be read"):
        simulate(output_dir=tmp_path / "again", store=store, **nested(rounds=1))
