"""Every round's metrics and traffic as TensorBoard scalars, one event folder per run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedstream.errors import ConfigError
from fedstream.tracking.base import RunCallback, RunStart, flat_settings
from fedstream.types import RoundReport

if TYPE_CHECKING:
    from fedstream.simulation.engine import SimulationResult


class TensorBoardLogger(RunCallback):
    """Writes ``<log_dir>/<run id>/events.out.tfevents.*``: each round's metrics under
    their own names (``central_accuracy``, ``dp_epsilon``, …), ``traffic/bytes_up`` and
    ``bytes_down``, ``clients/completed`` and ``failed``, at step = the round; and the
    settings as a text summary. ``tensorboard --logdir <log_dir>`` shows them."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "tracking",
                "tensorboard",
                "tensorboard installed: pip install 'fedstream[tracking]'",
            ) from None
        self.log_dir = Path(log_dir)
        self._writer_class = SummaryWriter
        self._writer: Any = None

    def on_run_start(self, start: RunStart) -> None:
        self._writer = self._writer_class(str(self.log_dir / (start.run_id or "run")))
        table = "\n".join(f"| {k} | {v} |" for k, v in flat_settings(start.settings).items())
        self._writer.add_text(
            "settings", f"{start.label}\n\n| setting | value |\n|---|---|\n{table}"
        )

    def on_round_end(self, report: RoundReport) -> None:
        step = report.round
        for name, value in report.metrics.items():
            self._writer.add_scalar(name, value, step)
        self._writer.add_scalar("traffic/bytes_up", report.bytes_up, step)
        self._writer.add_scalar("traffic/bytes_down", report.bytes_down, step)
        self._writer.add_scalar("clients/completed", len(report.completed), step)
        self._writer.add_scalar("clients/failed", len(report.failures), step)
        self._writer.flush()

    def on_run_end(self, result: SimulationResult, error: str | None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
