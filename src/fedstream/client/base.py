"""The client-side training interface."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fedstream.data.base import ClientData
from fedstream.params import Params
from fedstream.types import ClientUpdate, EvaluateResult, FitConfig


@dataclass(frozen=True)
class FitTask:
    """A training task for one client in one round."""

    client_id: str
    round: int
    config: FitConfig


@runtime_checkable
class Trainer(Protocol):
    """Turns global params + a task config + local data into a ``ClientUpdate``.

    A trainer is built once per process and reused for every client and round: it holds the
    model skeleton, never a client's state between calls.
    """

    def fit(self, params: Params, task: FitTask, data: ClientData) -> ClientUpdate: ...

    def evaluate(
        self, params: Params, client_id: str, round_number: int, data: ClientData
    ) -> EvaluateResult: ...


@runtime_checkable
class CohortTrainer(Trainer, Protocol):
    """A trainer that can train many clients of one architecture in one pass."""

    def fit_cohort(
        self, params: Params, tasks: Sequence[FitTask], datasets: Sequence[ClientData]
    ) -> list[ClientUpdate]: ...
