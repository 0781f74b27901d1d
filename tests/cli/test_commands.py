"""The command line, run as a real process the way a user runs it."""

import json
import subprocess
import sys

import pytest

import fedstream
from fedstream import ConfigError
from fedstream.deploy import load_identities
from fedstream.transport.grpc.server import FedstreamService, token_matches
from tests.settings import nested

pytestmark = pytest.mark.slow  # whole runs in fresh processes


def fedstream_cli(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


def test_version():
    done = fedstream_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"fedstream, version {fedstream.__version__}"


def test_run_with_a_config_file_and_flags(tmp_path):
    (tmp_path / "run.toml").write_text(
        '[strategy]\nname = "fedadam"\n\n[run]\nrounds = 5\nclients_per_round = 10\n'
    )
    out = tmp_path / "out"
    done = fedstream_cli(
        "run", "--config", str(tmp_path / "run.toml"), "--run.rounds", "2", "--output", str(out)
    )
    assert done.returncode == 0, done.stderr
    document = json.loads((out / "results.json").read_text())
    assert document["config"]["strategy"]["name"] == "fedadam"
    assert document["config"]["run"]["rounds"] == 2  # the flag wins over the file
    assert document["config"]["run"]["clients_per_round"] == 10  # the file wins over defaults
    assert len(document["rounds"]) == 2
    assert "central_accuracy" in done.stdout  # the final table
    assert (out / "curves.png").exists() and (out / "metrics.csv").exists()


def test_bad_flag_value_is_a_clear_error_and_exit_2(tmp_path):
    done = fedstream_cli("run", "--client.lr", "-1", "--output", str(tmp_path / "x"))
    assert done.returncode == 2
    assert "error: client.lr=-1.0 is invalid: expected a finite number > 0" in done.stderr
    assert not (tmp_path / "x").exists()


def test_zero_rounds_and_a_resume_to_fewer_rounds_than_done_are_refused(tmp_path):
    done = fedstream_cli("run", "--run.rounds", "0", "--output", str(tmp_path / "zero"))
    assert done.returncode == 2
    assert "error: run.rounds=0 is invalid: expected an integer >= 1" in done.stderr
    assert not (tmp_path / "zero").exists()
    out = tmp_path / "run"
    small = ("--data.num-clients", "6", "--run.clients-per-round", "2", "--quiet")
    assert fedstream_cli("run", "--run.rounds", "3", "--output", str(out), *small).returncode == 0
    before = (out / "rounds.jsonl").read_bytes(), (out / "results.json").read_bytes()
    done = fedstream_cli("run", "--resume", str(out), "--run.rounds", "2", "--quiet")
    assert done.returncode == 2
    assert (
        f"error: run.rounds=2 is invalid: expected at least 3, the rounds the run in {out} "
        "has done (a resume runs the rounds after them)"
    ) in done.stderr
    assert ((out / "rounds.jsonl").read_bytes(), (out / "results.json").read_bytes()) == before


def test_unknown_and_old_flat_toml_keys_are_named_with_what_to_write(tmp_path):
    (tmp_path / "run.toml").write_text("[client]\nlearning_rate = 0.1\n")
    done = fedstream_cli("run", "--config", str(tmp_path / "run.toml"))
    assert done.returncode == 2
    assert "client.learning_rate=0.1 is invalid: expected a setting of [client]" in done.stderr
    (tmp_path / "old.toml").write_text("lr = 0.1\n")
    done = fedstream_cli("run", "--config", str(tmp_path / "old.toml"))
    assert done.returncode == 2
    assert "config.lr=0.1 is invalid: expected the key 'client.lr' now" in done.stderr
    assert "under [client] as lr = 0.1, as a flag --client.lr" in done.stderr
    done = fedstream_cli("run", "--rounds", "3")  # an old flag: click names the new one
    assert done.returncode == 2 and "--run.rounds" in done.stderr


def test_data_describe_prints_the_split_and_draws_the_heatmap(tmp_path):
    plot = tmp_path / "digits.png"
    done = fedstream_cli(
        "data",
        "describe",
        "digits",
        "--data.num-clients",
        "20",
        "--data.partition",
        "shards",
        "--plot",
        str(plot),
    )
    assert done.returncode == 0, done.stderr
    assert "shards over 20 clients" in done.stdout
    assert "classes_per_client_mean" in done.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    done = fedstream_cli("data", "describe", "diabetes", "--plot", str(tmp_path / "d.png"))
    assert done.returncode == 0, done.stderr  # a regression set: target ranges, not classes
    assert "diabetes: iid over 100 clients" in done.stdout
    assert "client_target_mean_min" in done.stdout


def test_data_describe_names_a_missing_source(tmp_path):
    done = fedstream_cli(
        "data", "describe", "shakespeare", "--data.shakespeare-source", str(tmp_path)
    )
    assert done.returncode == 2
    assert "no Shakespeare texts" in done.stderr and str(tmp_path) in done.stderr


def test_run_from_a_preset_with_a_flag_on_top(tmp_path):
    out = tmp_path / "out"
    done = fedstream_cli(
        "run",
        "--preset",
        "breast_cancer_hospitals",
        "--run.rounds",
        "2",
        "--output",
        str(out),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    document = json.loads((out / "results.json").read_text())
    config = document["config"]
    assert config["data"]["dataset"] == "breast_cancer"
    assert config["data"]["num_clients"] == 5 and config["run"]["rounds"] == 2
    unknown = fedstream_cli("run", "--preset", "mnist_cnn")
    assert unknown.returncode == 2 and "preset='mnist_cnn' is invalid" in unknown.stderr


def test_run_on_worker_processes_reports_them_and_matches_the_in_process_run(tmp_path):
    out = tmp_path / "out"
    flags = ("--run.rounds", "2", "--data.num-clients", "20", "--run.clients-per-round", "6",
             "--execution.trainer", "sequential")  # fmt: skip
    done = fedstream_cli(
        "run", *flags, "--execution.executor", "processes", "--execution.workers", "2",
        "--output", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "processes × 2" in done.stdout and "sequential (as configured)" in done.stdout
    document = json.loads((out / "results.json").read_text())
    assert document["data"]["executor"] == "processes" and document["data"]["workers"] == 2
    alone = fedstream.simulate(
        **nested(rounds=2, num_clients=20, clients_per_round=6, trainer="sequential")
    )
    assert document["final_metrics"] == alone.final_metrics


def test_tokens_provisions_each_clients_signing_key_and_the_roster(tmp_path):
    out = tmp_path / "tokens.json"
    done = fedstream_cli(
        "tokens", "--data.num-clients", "3", "--run.clients-per-round", "3", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    tokens = json.loads(out.read_text())
    keys = json.loads((tmp_path / "identities.json").read_text())
    roster = json.loads((tmp_path / "roster.json").read_text())
    assert sorted(tokens) == sorted(keys) == sorted(roster) == ["client-0", "client-1", "client-2"]
    for secret in ("tokens.json", "identities.json", "server-tokens.json"):
        assert oct((tmp_path / secret).stat().st_mode & 0o777) == "0o600", secret
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    # the server's file holds salted hashes only, which the service accepts
    hashed = json.loads((tmp_path / "server-tokens.json").read_text())
    assert all(h.startswith("sha256$") and tokens[c] not in h for c, h in hashed.items())
    service = FedstreamService(hashed, run_id="r")
    assert token_matches(service.tokens["client-0"], tokens["client-0"])
    assert not token_matches(service.tokens["client-0"], tokens["client-1"])
    plain = FedstreamService(tokens, run_id="r")  # a plaintext file is hashed on load
    assert all(tokens[c] not in h for c, h in plain.tokens.items())
    # one site gets its own key alone, and the roster
    own = tmp_path / "identity-1.key"
    own.write_text(keys["client-1"])
    identity = load_identities("client-1", own, tmp_path / "roster.json")
    message = b"survivors"
    identity.verify("client-1", identity.sign(message), message, "check")
    with pytest.raises(ConfigError, match="a key whose public half is this client's roster"):
        load_identities("client-2", own, tmp_path / "roster.json")
