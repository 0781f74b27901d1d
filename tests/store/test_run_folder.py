"""A run folder is one run's (issue 18, items 13 and 14): locked while it runs, refused when
it already holds something unless told, and carrying its own history of rounds."""

import json
import subprocess
import sys
import time

import pytest

from fedstream import ConfigError, Params, simulate
from fedstream.store import CheckpointError, RunStore
from fedstream.store.folder import RoundHistory, claim_run_folder
from tests.settings import nested

SMALL = dict(num_clients=6, clients_per_round=2, local_epochs=1)


def rounds_in_results(folder):
    return [r["round"] for r in json.loads((folder / "results.json").read_text())["rounds"]]


@pytest.mark.slow
def test_a_second_run_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "fedstream.cli", "run", "--output", str(out), "--quiet",
         "--run.rounds", "200", "--data.num-clients", "6", "--run.clients-per-round", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (out / "rounds.jsonl").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        second = subprocess.run(
            [sys.executable, "-m", "fedstream.cli", "run", "--output", str(out), "--quiet",
             "--overwrite", "--run.rounds", "1"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2
        assert f"a folder no other run is using (process {first.pid} holds it)" in second.stderr
        # not even a resume may join it
        with pytest.raises(ConfigError, match=f"process {first.pid} holds it"):
            simulate(output_dir=out, resume=True)
        assert first.poll() is None  # the first run goes on undisturbed
    finally:
        first.kill()
        first.wait()
    # once it is gone (even by kill -9) the lock goes with it: the run resumes, for one
    # round more than its history holds
    done = len((out / "rounds.jsonl").read_text().splitlines())
    resumed = simulate(output_dir=out, resume=True, **nested(rounds=done + 1))
    assert resumed.state.round == done + 1


def test_a_used_folder_needs_resume_or_overwrite_and_overwrite_starts_clean(tmp_path):
    out, store = tmp_path / "run", tmp_path / "store.sqlite"
    simulate(output_dir=out, **nested(rounds=5, seed=1, **SMALL))
    with pytest.raises(ConfigError, match=r"an empty or new folder: it holds .*--overwrite"):
        simulate(output_dir=out, **nested(rounds=2, seed=2, **SMALL))
    assert len(RunStore(store).run("run")["rounds"]) == 5  # nothing was lost
    again = simulate(output_dir=out, overwrite=True, **nested(rounds=2, seed=2, **SMALL))
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["round-000001", "round-000002"]  # the old run's are gone
    run = RunStore(store).run("run")
    assert run["status"] == "finished" and [r["round"] for r in run["rounds"]] == [1, 2]
    assert run["config"]["execution"]["seed"] == 2
    # the registry and the rounds were cleared together: every version is the new run's
    versions = RunStore(store).models("run")
    assert [v["version"] for v in versions] == [1, 2]
    _, blob = RunStore(store).model("run", 2)
    assert Params.from_bytes(blob).bit_equal(again.state.params)
    assert rounds_in_results(out) == [1, 2]


def test_overwrite_never_clears_a_folder_that_is_not_a_run(tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    with pytest.raises(ConfigError, match=r"it has no config\.json, so it is not one"):
        simulate(output_dir=precious, overwrite=True, **nested(rounds=1, **SMALL))
    assert (precious / "chapter1.tex").read_text() == "years of work"


def test_two_folders_of_one_name_cannot_share_a_store(tmp_path):
    store = tmp_path / "store.sqlite"
    simulate(output_dir=tmp_path / "a" / "run", store=store, **nested(rounds=1, **SMALL))
    with pytest.raises(ConfigError, match=r"run 'run' is, from .*a/run"):
        simulate(output_dir=tmp_path / "b" / "run", store=store, **nested(rounds=1, **SMALL))


@pytest.mark.parametrize("lose", ["delete the store", "forget --store"])
def test_a_resume_keeps_the_whole_history_when_the_store_is_lost(tmp_path, lose):
    out = tmp_path / "run"
    simulate(output_dir=out, store=tmp_path / "first.sqlite", **nested(rounds=8, **SMALL))
    if lose == "delete the store":
        (tmp_path / "first.sqlite").unlink()
        store = tmp_path / "first.sqlite"
    else:
        store = tmp_path / "store.sqlite"  # the default, which never saw this run
    simulate(output_dir=out, resume=True, store=store, **nested(rounds=10))
    assert rounds_in_results(out) == list(range(1, 11))  # not [8, 9, 10]
    assert [r["round"] for r in RunStore(store).run("run")["rounds"]] == list(range(1, 11))


def test_a_resume_with_no_history_anywhere_is_refused(tmp_path):
    out = tmp_path / "run"
    simulate(output_dir=out, **nested(rounds=3, **SMALL))
    (out / "rounds.jsonl").unlink()
    (tmp_path / "store.sqlite").unlink()
    with pytest.raises(ConfigError, match=r"the history of rounds 1–2: rounds.jsonl in the run"):
        simulate(output_dir=out, resume=True, **nested(rounds=4))


def test_the_history_drops_a_torn_last_line_and_names_a_damaged_one(tmp_path):
    simulate(output_dir=tmp_path / "run", **nested(rounds=3, **SMALL))
    history = RoundHistory(tmp_path / "run")
    with history.path.open("a") as file:
        file.write('{"round": 4, "samp')  # a crash in the middle of an append
    assert [r.round for r in history.read(up_to=3)] == [1, 2, 3]
    assert history.path.read_text().endswith("\n")
    assert [r.round for r in history.read(up_to=2)] == [1, 2]  # a resume from round 2
    history.path.write_text(history.path.read_text().replace('"round":2', '"round":"x'))
    with pytest.raises(CheckpointError, match=r"rounds.jsonl, line 2, is damaged"):
        history.read(up_to=3)


def test_resume_and_overwrite_together_are_refused(tmp_path):
    claim = claim_run_folder(tmp_path / "run", resume=True, overwrite=True)
    with pytest.raises(ConfigError, match="overwrite=True is invalid: expected not together"):
        claim.__enter__()
