"""Phase 4, aggregate: from the round's accepted updates to what the strategy steps on.

One small interface, :class:`Aggregation`, covers every way a round can combine updates:

- the plain streaming sum (``secure.plain.PlainSum``): each update is added as it arrives;
- the individual updates, for a strategy that needs each one (a robust rule): kept as the
  rows of one matrix, spilled to a memory-mapped file past a budget
  (``aggregation.updates``), with the streaming sum beside them;
- a secure sum (SecAgg+, CKKS, Paillier): updates stay on their clients and a protocol over
  the transport reveals only their sum.

Which one a round uses follows from its settings (:func:`aggregation_for`); the protocol of
a secure sum is looked up by its scheme's name, never by the config's type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from fedstream.aggregation.updates import UpdateBuffer
from fedstream.errors import ConfigError, RoundFailedError
from fedstream.params import Params
from fedstream.rounds.collect import Collected
from fedstream.rounds.config import RoundConfig, SecureSumConfig
from fedstream.secure.plain import PlainSum
from fedstream.secure.session import Exchanger, SecureSumResult, he_sum, secure_sum
from fedstream.strategies.base import Strategy
from fedstream.types import ClientUpdate, UpdateBlock, WeightedSum

# (transport, round, participants, like, config, rng) -> result, by the config's scheme
SECURE_PROTOCOLS: dict[str, Callable[..., SecureSumResult]] = {
    "secagg+": secure_sum,
    "ckks": he_sum,
    "paillier": he_sum,
}


class Aggregation(Protocol):
    """One round's combination of accepted updates.

    ``on_clients``: the updates stay on their clients (a secure sum), so the server gets
    from each only its metrics, and ``add`` is never called. ``min_participants`` is the
    fewest clients it can combine. ``finish`` runs whatever protocol is left over the
    transport and returns the aggregate with who is in it.
    """

    @property
    def on_clients(self) -> bool: ...

    @property
    def min_participants(self) -> int: ...

    def add(self, update: ClientUpdate) -> None: ...

    def add_block(self, block: UpdateBlock) -> None:
        """``add`` for each row of ``block``, in its order."""
        ...

    def finish(
        self,
        transport: Exchanger,
        round_number: int,
        participants: Sequence[str],
        rng: np.random.Generator,
    ) -> SecureSumResult: ...


class StreamingSum:
    """The plain sum: Σ weight·payload kept in one model-sized float64 buffer."""

    on_clients = False
    min_participants = 1

    def __init__(self, like: Params) -> None:
        self._sum = PlainSum(like)

    def add(self, update: ClientUpdate) -> None:
        self._sum.add(update.payload, update.weight, update.extras)

    def add_block(self, block: UpdateBlock) -> None:
        self._sum.add_block(block.payload, block.weights)

    def finish(
        self,
        transport: Exchanger,
        round_number: int,
        participants: Sequence[str],
        rng: np.random.Generator,
    ) -> SecureSumResult:
        return SecureSumResult(self._sum.result(round_number), tuple(participants), (), 0, 0)


class IndividualUpdates:
    """The streaming sum, and every accepted update kept for the strategy to read."""

    on_clients = False
    min_participants = 1

    def __init__(self, like: Params, capacity: int, budget_bytes: int) -> None:
        self._sum = StreamingSum(like)
        self._buffer = UpdateBuffer(like, capacity, budget_bytes)

    def add(self, update: ClientUpdate) -> None:
        self._sum.add(update)
        self._buffer.add(update.client_id, update.payload, update.weight)

    def add_block(self, block: UpdateBlock) -> None:
        self._sum.add_block(block)
        for update in block.rows():
            self._buffer.add(update.client_id, update.payload, update.weight)

    def finish(
        self,
        transport: Exchanger,
        round_number: int,
        participants: Sequence[str],
        rng: np.random.Generator,
    ) -> SecureSumResult:
        summed = self._sum.finish(transport, round_number, participants, rng)
        aggregate = replace(summed.aggregate, updates=self._buffer.matrix())
        return replace(summed, aggregate=aggregate)


class SecureRound:
    """A secure sum: the clients hold their updates until ``finish`` runs the protocol."""

    on_clients = True
    min_participants = 2

    def __init__(self, like: Params, config: SecureSumConfig) -> None:
        self._like = like
        self._config = config
        self._protocol = SECURE_PROTOCOLS[config.scheme]

    def add(self, update: ClientUpdate) -> None:
        raise AssertionError("a secure sum never sees an update")  # pragma: no cover

    def add_block(self, block: UpdateBlock) -> None:
        raise AssertionError("a secure sum never sees an update")  # pragma: no cover

    def finish(
        self,
        transport: Exchanger,
        round_number: int,
        participants: Sequence[str],
        rng: np.random.Generator,
    ) -> SecureSumResult:
        return self._protocol(transport, round_number, participants, self._like, self._config, rng)


def check_composable(strategy: Strategy, config: RoundConfig) -> None:
    """A strategy that needs each client's update cannot run under a secure sum, which
    reveals only their total: say so before anything is sent."""
    secure = config.secure_aggregation
    if secure is not None and strategy.needs_individual_updates:
        raise ConfigError(
            "secure_aggregation",
            secure.scheme,
            f"a sum-based strategy; {strategy.name} needs each client's update, which "
            "secure aggregation hides",
        )


def aggregation_for(
    config: RoundConfig, like: Params, strategy: Strategy, capacity: int
) -> Aggregation:
    """The aggregation a round with ``config`` and ``strategy`` uses over at most
    ``capacity`` updates shaped like ``like``."""
    secure = config.secure_aggregation
    if secure is not None:
        return SecureRound(like, secure)
    if strategy.needs_individual_updates:
        return IndividualUpdates(like, capacity, config.updates_budget_bytes)
    return StreamingSum(like)


@dataclass(frozen=True)
class Aggregated:
    """The aggregate and the round's outcome so far (collect, then the secure protocol)."""

    aggregate: WeightedSum
    collected: Collected


def aggregate_updates(
    aggregation: Aggregation,
    transport: Exchanger,
    collected: Collected,
    config: RoundConfig,
    sampled: int,
    round_number: int,
    rng: np.random.Generator,
) -> Aggregated:
    """Finish the aggregation over the clients that gave a valid update. Too few of them,
    before or after a secure protocol drops more, fails the round, naming every failure."""
    needed = max(config.min_clients, aggregation.min_participants)
    outcome = None
    if len(collected.completed) >= needed:
        outcome = aggregation.finish(transport, round_number, collected.completed, rng)
        collected = collected.joined(outcome)
    if outcome is None or len(collected.completed) < needed:
        secure = " (secure aggregation needs at least 2)" if aggregation.on_clients else ""
        raise RoundFailedError(
            round_number,
            f"{len(collected.completed)} of {sampled} sampled clients gave a valid update, "
            f"min_clients={config.min_clients}{secure}",
            collected.failures,
        )
    return Aggregated(outcome.aggregate, collected)
