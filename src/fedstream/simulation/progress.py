"""A live progress bar for a run: one step per round, with the latest metrics beside it."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

from fedstream.types import RoundReport

if TYPE_CHECKING:
    from fedstream.simulation.engine import SimulationResult

_SHOWN = (
    ("central_accuracy", "acc", "{:.3f}"),
    ("central_loss", "loss", "{:.3f}"),
    ("dp_epsilon", "ε", "{:.2f}"),
)
_BAR_WIDTH = 8


def format_metrics(report: RoundReport) -> str:
    """The headline numbers of a round, most important first, as one short line: with the
    round counter, the bar and the time it fits 80 columns; the final table has the rest.
    Where a terminal is narrower, the line is cut from its end (traffic goes first)."""
    parts = [
        f"{label} {form.format(report.metrics[key])}"
        for key, label, form in _SHOWN
        if key in report.metrics
    ]
    if report.failures:
        parts.append(f"[yellow]{len(report.failures)} failed[/]")
    parts.append(f"↑{report.bytes_up / 1e6:.3g} ↓{report.bytes_down / 1e6:.3g} MB")
    return " ".join(parts)


class _MetricsColumn(ProgressColumn):
    """The round's metrics, taking the width the other columns leave and cut with "…"."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1))

    def render(self, task: Task) -> Text:
        text = Text.from_markup(task.fields["metrics"], overflow="ellipsis")
        text.no_wrap = True
        return text


class RoundProgress:
    """Context manager; ``advance(report)`` after each round. Disabled, it does nothing."""

    def __init__(
        self, rounds: int, enabled: bool, console: Console | None = None, done: int = 0
    ) -> None:
        self.enabled = enabled
        counter = 2 * len(str(rounds)) + 1  # "12/100"
        self._progress = Progress(
            TextColumn("[bold]round", table_column=Column(min_width=5, no_wrap=True)),
            MofNCompleteColumn(table_column=Column(min_width=counter, no_wrap=True)),
            BarColumn(bar_width=_BAR_WIDTH, table_column=Column(min_width=_BAR_WIDTH)),
            TimeElapsedColumn(table_column=Column(min_width=7, no_wrap=True)),
            _MetricsColumn(),
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
