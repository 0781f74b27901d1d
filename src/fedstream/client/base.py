"""The client-side training interface."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fedstream.data.base import ClientData
from fedstream.params import Params
from fedstream.types import ClientUpdate, EvaluateResult, FitConfig, UpdateBlock


@dataclass(frozen=True)
class FitTask:
    """A training task for one client in one round. ``correction`` is added to every local
    gradient (SCAFFOLD's c − c_i, per parameter name); the client makes it, from what the
    server sent and its own state (``client.algorithms``), never the server.

    ``noise_seed`` seeds the client's privacy noise (local DP, DP-SGD's Poisson sampling
    and noise). The client's device makes it from a secret of its own
    (``privacy.device_noise_seed``), never from what the server sends, so the server cannot
    draw the same noise and subtract it. ``None``, the default and what a deployed client
    uses, draws that noise from the OS CSPRNG instead.

    ``frozen`` names the model entries this task leaves as they are: FedRep trains a
    client's personal head with the shared body frozen, then the body with the head
    frozen (``client.algorithms``). Only the trainer's own SGD steps honour it; a client
    algorithm is refused with a user's optimiser, train function or DP-SGD anyway.

    ``data_time`` is when, on a simulated clock, the task starts and its client reads its
    data (s): a streaming client trains on its newest window then (``data.stream``)."""

    client_id: str
    round: int
    config: FitConfig
    correction: Params | None = None
    noise_seed: int | None = None
    frozen: tuple[str, ...] = ()
    data_time: float | None = None

    @classmethod
    def planned(cls, client_id: str, round_number: int, config: FitConfig) -> FitTask:
        """``FitTask(client_id, round_number, config)``, the rest at their defaults, at
        under half its cost: a round plans one per sampled client, thousands at
        cross-device scale, and a frozen dataclass sets each field through
        ``object.__setattr__`` (nothing here needs checking)."""
        task = object.__new__(cls)
        fields = task.__dict__
        fields.update(_PLANNED_DEFAULTS)
        fields["client_id"], fields["round"], fields["config"] = client_id, round_number, config
        return task


_PLANNED_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(FitTask) if f.default is not dataclasses.MISSING
}


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
        self,
        params: Params,
        tasks: Sequence[FitTask],
        datasets: Sequence[ClientData],
        starts: Sequence[Params] | None = None,
    ) -> UpdateBlock:
        """Train every task's client on its data, from ``params``, or from its own entry of
        ``starts`` (the global params with the client's local entries in); each update's
        delta is relative to where that client started. The updates come stacked, in the
        tasks' order (at least one task)."""
        ...


def evaluate_client(
    trainer: Trainer,
    params: Params,
    client_id: str,
    round_number: int,
    data: ClientData,
    personalize: FitConfig | None = None,
    own: Params | None = None,
) -> EvaluateResult:
    """The client's evaluation of the global ``params``, and of the model it uses itself,
    reported beside prefixed ``personal_``: ``own`` when it keeps one (its personal layers
    over the global model, or Ditto's whole model), adapted to its training data first with
    ``personalize`` (that many local epochs of the usual training), from ``own`` or else
    from ``params``. The personal model stays on the client."""
    result = trainer.evaluate(params, client_id, round_number, data)
    if result.num_examples == 0:
        return result
    start = own if own is not None else params
    if personalize is not None and data.num_train > 0:
        task = FitTask(client_id, round_number, personalize)
        adapted = start + trainer.fit(start, task, data).payload
    elif own is not None:
        adapted = own
    else:
        return result
    personal = trainer.evaluate(adapted, client_id, round_number, data)
    metrics = {**result.metrics, **{f"personal_{k}": v for k, v in personal.metrics.items()}}
    return EvaluateResult(client_id, round_number, result.num_examples, metrics)
