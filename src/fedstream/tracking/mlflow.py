"""A run as an MLflow run: its settings as parameters, every round's metrics at step = the
round, its output files as artifacts, and its end as FINISHED or FAILED."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fedstream.errors import ConfigError
from fedstream.tracking.base import RunCallback, RunStart, flat_settings
from fedstream.types import RoundReport

if TYPE_CHECKING:
    from fedstream.simulation.engine import SimulationResult

ARTIFACTS = ("results.json", "metrics.csv", "curves.png", "config.json")


class MLflowLogger(RunCallback):
    """Logs to the MLflow tracking store at ``tracking_uri`` (a database such as
    ``sqlite:///mlflow.db``, or a tracking server's URL), under ``experiment`` (made if it
    does not exist), through an explicit ``MlflowClient``: no global MLflow state is set.
    The MLflow run is named by the fedstream run id; a resumed run starts a new MLflow run
    that logs the rounds after the resume."""

    def __init__(self, tracking_uri: str, experiment: str = "fedstream") -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(
                "tracking", "mlflow", "mlflow installed: pip install 'fedstream[tracking]'"
            ) from None
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment = experiment
        self.mlflow_run_id: str | None = None
        self._output_dir: Any = None

    def on_run_start(self, start: RunStart) -> None:
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = (
            found.experiment_id if found else self.client.create_experiment(self.experiment)
        )
        tags = {"fedstream.label": start.label, "fedstream.rounds_done": str(start.rounds_done)}
        run = self.client.create_run(experiment_id, run_name=start.run_id or None, tags=tags)
        self.mlflow_run_id = run.info.run_id
        self._output_dir = start.output_dir
        for key, value in flat_settings(start.settings).items():
            self.client.log_param(self.mlflow_run_id, key, value[:6000])

    def on_round_end(self, report: RoundReport) -> None:
        assert self.mlflow_run_id is not None
        values = {
            **report.metrics,
            "bytes_up": float(report.bytes_up),
            "bytes_down": float(report.bytes_down),
            "clients_completed": float(len(report.completed)),
            "clients_failed": float(len(report.failures)),
        }
        for name, value in values.items():
            self.client.log_metric(self.mlflow_run_id, name, float(value), step=report.round)

    def on_run_end(self, result: SimulationResult, error: str | None) -> None:
        if self.mlflow_run_id is None:
            return
        if self._output_dir is not None:
            for name in ARTIFACTS:
                if (self._output_dir / name).exists():
                    self.client.log_artifact(self.mlflow_run_id, str(self._output_dir / name))
        if error is not None:
            self.client.set_tag(self.mlflow_run_id, "fedstream.error", error[:5000])
        self.client.set_terminated(self.mlflow_run_id, "FAILED" if error else "FINISHED")
