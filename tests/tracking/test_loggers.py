"""The run loop's callbacks, and the TensorBoard and MLflow loggers read back through the
real libraries' own readers."""

import logging

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedstream import simulate
from fedstream.cli import main
from fedstream.tracking import MLflowLogger, RunCallback, TensorBoardLogger, flat_settings
from tests.settings import nested

SMALL = dict(num_clients=6, clients_per_round=3, local_epochs=1)


class Recorder(RunCallback):
    def __init__(self):
        self.events = []

    def on_run_start(self, start):
        self.events.append(("start", start.run_id, start.rounds_done, start.label))

    def on_round_end(self, report):
        self.events.append(("round", report.round))

    def on_run_end(self, result, error):
        self.events.append(("end", len(result.reports), error))


class BreaksAtRound2(RunCallback):
    def __init__(self):
        self.rounds = []

    def on_round_end(self, report):
        self.rounds.append(report.round)
        if report.round == 2:
            raise ConnectionError("tracking server gone")


def test_callbacks_hear_start_each_round_and_end_also_after_a_resume(tmp_path):
    first = Recorder()
    simulate(
        output_dir=tmp_path / "run", callbacks=[first], **nested(rounds=2, dp="client", **SMALL)
    )
    assert first.events == [
        ("start", "run", 0, "fedavg + DP (client)"), ("round", 1), ("round", 2), ("end", 2, None),
    ]  # fmt: skip
    again = Recorder()
    simulate(output_dir=tmp_path / "run", resume=True, callbacks=[again], **nested(rounds=3))
    assert again.events == [
        ("start", "run", 2, "fedavg + DP (client)"),
        ("round", 3),
        ("end", 3, None),
    ]


def test_a_callback_that_raises_is_dropped_and_training_goes_on(caplog):
    broken, recorder = BreaksAtRound2(), Recorder()
    with caplog.at_level(logging.WARNING, logger="fedstream.tracking.base"):
        result = simulate(callbacks=[broken, recorder], **nested(rounds=4, **SMALL))
    assert len(result.reports) == 4 and broken.rounds == [1, 2]  # not called after it broke
    assert [e for e in recorder.events if e[0] == "round"] == [("round", r) for r in (1, 2, 3, 4)]
    assert (
        "callback BreaksAtRound2 failed in on_round_end and is left out of the rest of the "
        "run: tracking server gone" in caplog.text
    )


def test_settings_flatten_to_text():
    assert flat_settings({"model": {"hidden": [64, 32], "name": "mlp"}, "run": {"rounds": 3}}) == {
        "model.hidden": "64,32", "model.name": "mlp", "run.rounds": "3",
    }  # fmt: skip


@pytest.mark.slow  # whole runs
def test_tensorboard_gets_every_rounds_metrics_and_traffic(tmp_path):
    result = simulate(
        output_dir=tmp_path / "run", callbacks=[TensorBoardLogger(tmp_path / "tb")],
        **nested(rounds=3, **SMALL),
    )  # fmt: skip
    events = EventAccumulator(str(tmp_path / "tb" / "run"))
    events.Reload()
    accuracy = [(e.step, e.value) for e in events.Scalars("central_accuracy")]
    expected = [(r.round, r.metrics["central_accuracy"]) for r in result.reports]
    assert [s for s, _ in accuracy] == [1, 2, 3]
    assert [v for _, v in accuracy] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert [e.value for e in events.Scalars("traffic/bytes_up")] == [
        r.bytes_up for r in result.reports
    ]
    assert [e.value for e in events.Scalars("clients/completed")] == [3.0, 3.0, 3.0]
    assert "settings/text_summary" in events.Tags()["tensors"]


@pytest.mark.slow  # whole runs
def test_mlflow_gets_settings_metrics_artifacts_and_status(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger(uri, experiment="study")
    result = simulate(output_dir=tmp_path / "run", callbacks=[logger], **nested(rounds=3, **SMALL))
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(logger.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(run.info.experiment_id).name == "study"
    assert run.data.params["run.rounds"] == "3" and run.data.params["strategy.name"] == "fedavg"
    history = client.get_metric_history(run.info.run_id, "central_accuracy")
    assert [(m.step, m.value) for m in history] == [
        (r.round, r.metrics["central_accuracy"]) for r in result.reports
    ]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"results.json", "metrics.csv", "curves.png", "config.json"}


@pytest.mark.slow  # whole runs
def test_the_command_line_logs_to_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = CliRunner().invoke(main, [
        "run", "--output", str(tmp_path / "run"), "--quiet", "--run.rounds", "2",
        "--data.num-clients", "6", "--run.clients-per-round", "3",
        "--tensorboard", str(tmp_path / "tb"), "--mlflow", uri,
    ])  # fmt: skip
    assert done.exit_code == 0, done.output
    events = EventAccumulator(str(tmp_path / "tb" / "run"))
    events.Reload()
    assert [e.step for e in events.Scalars("central_loss")] == [1, 2]
    client = MlflowClient(tracking_uri=uri)
    (found,) = client.search_runs([client.get_experiment_by_name("fedstream").experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
