"""A live progress bar for a run: one step per round, with the latest metrics beside it."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedstream.types import RoundReport

if TYPE_CHECKING:
    from fedstream.simulation.engine import SimulationResult

_SHOWN = (
    ("central_accuracy", "acc"),
    ("central_loss", "loss"),
    ("fed_accuracy", "fed acc"),
    ("train_loss", "train loss"),
    ("central_mse", "mse"),
    ("dp_epsilon", "ε"),
)


def format_metrics(report: RoundReport) -> str:
    """The few headline numbers of a round, as one short line."""
    parts = [f"{label} {report.metrics[key]:.4f}" for key, label in _SHOWN if key in report.metrics]
    parts.append(f"↑{report.bytes_up / 1e6:.2f} ↓{report.bytes_down / 1e6:.2f} MB")
    if report.failures:
        parts.append(f"[yellow]{len(report.failures)} failed[/]")
    return "  ".join(parts)


class RoundProgress:
    """Context manager; ``advance(report)`` after each round. Disabled, it does nothing."""

    def __init__(
        self, rounds: int, enabled: bool, console: Console | None = None, done: int = 0
    ) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]round"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=console,
            disable=not enabled,
        )
        self._task = self._progress.add_task("rounds", total=rounds, completed=done, metrics="")

    def __enter__(self) -> RoundProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.__exit__(kind, value, traceback)

    def advance(self, report: RoundReport) -> None:
        self._progress.update(self._task, advance=1, metrics=format_metrics(report))

    @staticmethod
    def print_summary(result: SimulationResult, console: Console | None = None) -> None:
        from fedstream.simulation.report import summary_table

        (console or Console()).print(summary_table(result))
