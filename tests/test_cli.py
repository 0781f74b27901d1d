"""The command line, run as a real process the way a user runs it."""

import json
import subprocess
import sys

import fedstream


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
    (tmp_path / "run.toml").write_text('strategy = "fedadam"\nrounds = 5\nclients_per_round = 10\n')
    out = tmp_path / "out"
    done = fedstream_cli(
        "run", "--config", str(tmp_path / "run.toml"), "--rounds", "2", "--output", str(out)
    )
    assert done.returncode == 0, done.stderr
    document = json.loads((out / "results.json").read_text())
    assert document["config"]["strategy"] == "fedadam"
    assert document["config"]["rounds"] == 2  # the flag wins over the file
    assert len(document["rounds"]) == 2
    assert "central_accuracy" in done.stdout  # the final table
    assert (out / "curves.png").exists() and (out / "metrics.csv").exists()


def test_bad_flag_value_is_a_clear_error_and_exit_2(tmp_path):
    done = fedstream_cli("run", "--lr", "-1", "--output", str(tmp_path / "x"))
    assert done.returncode == 2
    assert "error: lr=-1.0 is invalid: expected a finite number > 0" in done.stderr
    assert not (tmp_path / "x").exists()


def test_unknown_toml_key_is_named(tmp_path):
    (tmp_path / "run.toml").write_text("learning_rate = 0.1\n")
    done = fedstream_cli("run", "--config", str(tmp_path / "run.toml"))
    assert done.returncode == 2
    assert "config.learning_rate=0.1 is invalid: expected one of the settings" in done.stderr


def test_data_describe_prints_the_split_and_draws_the_heatmap(tmp_path):
    plot = tmp_path / "digits.png"
    done = fedstream_cli(
        "data",
        "describe",
        "digits",
        "--num-clients",
        "20",
        "--partition",
        "shards",
        "--plot",
        str(plot),
    )
    assert done.returncode == 0, done.stderr
    assert "shards over 20 clients" in done.stdout
    assert "classes_per_client_mean" in done.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_describe_names_a_missing_source(tmp_path):
    done = fedstream_cli("data", "describe", "shakespeare", "--shakespeare-source", str(tmp_path))
    assert done.returncode == 2
    assert "no Shakespeare texts" in done.stderr and str(tmp_path) in done.stderr


def test_run_from_a_preset_with_a_flag_on_top(tmp_path):
    out = tmp_path / "out"
    done = fedstream_cli(
        "run",
        "--preset",
        "breast_cancer_hospitals",
        "--rounds",
        "2",
        "--output",
        str(out),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    document = json.loads((out / "results.json").read_text())
    assert document["config"]["dataset"] == "breast_cancer"
    assert document["config"]["num_clients"] == 5 and document["config"]["rounds"] == 2
    unknown = fedstream_cli("run", "--preset", "mnist_cnn")
    assert unknown.returncode == 2 and "preset='mnist_cnn' is invalid" in unknown.stderr


def test_run_on_worker_processes_reports_them_and_matches_the_in_process_run(tmp_path):
    out = tmp_path / "out"
    flags = ("--rounds", "2", "--num-clients", "20", "--clients-per-round", "6",
             "--trainer", "sequential")  # fmt: skip
    done = fedstream_cli("run", *flags, "--executor", "processes", "--workers", "2",
                         "--output", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "processes × 2" in done.stdout and "sequential (as configured)" in done.stdout
    document = json.loads((out / "results.json").read_text())
    assert document["data"]["executor"] == "processes" and document["data"]["workers"] == 2
    alone = fedstream.simulate(rounds=2, num_clients=20, clients_per_round=6, trainer="sequential")
    assert document["final_metrics"] == alone.final_metrics
