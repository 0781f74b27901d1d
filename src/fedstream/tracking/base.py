"""The run loop's callbacks: a run starting, each round ending, the run ending.

A callback is an object with any of the three methods of ``RunCallback``; subclass it and
override what you need. The loop calls them in order, after the round's checkpoint and
store record are written. A callback that raises is logged with its name and left out of
the rest of the run, so a tracking server going down never stops training.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedstream.types import RoundReport

if TYPE_CHECKING:
    from fedstream.simulation.engine import SimulationResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunStart:
    """What a callback learns when a run starts (or resumes after ``rounds_done``)."""

    run_id: str
    label: str
    settings: Mapping[str, Mapping[str, Any]]
    output_dir: Path | None
    rounds_done: int


class RunCallback:
    """Override any of these; each does nothing by default."""

    def on_run_start(self, start: RunStart) -> None:
        """Before round 1 (or the first round after a resume)."""

    def on_round_end(self, report: RoundReport) -> None:
        """After each round, once it is checkpointed and recorded."""

    def on_run_end(self, result: SimulationResult, error: str | None) -> None:
        """After the last round and the run's outputs, or after a round failed
        (``error`` says why, and ``result`` holds the rounds before it)."""


def notify(callbacks: list[RunCallback], event: str, *args: Any) -> None:
    """Call ``event`` on every callback still in ``callbacks``; one that raises is logged
    and removed from the list, so it is not called again this run."""
    for callback in list(callbacks):
        try:
            getattr(callback, event)(*args)
        except Exception as exc:  # a tracker's failure must not stop training
            log.warning(
                "callback %s failed in %s and is left out of the rest of the run: %s",
                type(callback).__name__, event, exc,
            )  # fmt: skip
            callbacks.remove(callback)


def flat_settings(settings: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Settings by section as ``{"section.name": "value"}``, values as text (a list as its
    items joined by commas), for trackers whose parameters are flat strings."""

    def text(value: Any) -> str:
        if isinstance(value, Sequence) and not isinstance(value, str):
            return ",".join(text(item) for item in value)
        return str(value)

    return {
        f"{section}.{name}": text(value)
        for section, values in settings.items()
        for name, value in values.items()
    }
