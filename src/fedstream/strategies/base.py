"""The strategy interface: what the client optimises, what it sends, how the server steps.

A strategy is a frozen dataclass of hyperparameters and nothing else. Round state (global
params, server optimiser moments) lives in ``ServerState``, passed in and returned, so a
strategy can be called out of order, shared between runs, and saved with a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Protocol, runtime_checkable

from fedstream.params import Params
from fedstream.types import FitConfig, PayloadKind, ServerState, WeightedSum


@runtime_checkable
class Strategy(Protocol):
    """Four parts of a federated algorithm (docs/architecture.md, "The seams").

    - ``configure_fit``: what clients do — the payload kind (``"delta"`` or ``"gradient"``),
      FedProx's μ for the client objective, clipping and noise under DP;
    - the secure sum Σ weight·payload is done by the round loop's backend;
    - ``server_update``: new state from the old one and that sum;
    - ``round_metrics``: numbers the strategy adds to each round's report (e.g. ε).
    """

    @property
    def name(self) -> str: ...

    @property
    def payload(self) -> PayloadKind: ...

    @property
    def needs_individual_updates(self) -> bool: ...

    @property
    def proximal_mu(self) -> float: ...

    def configure_fit(self, state: ServerState, fit: FitConfig) -> FitConfig:
        """The task config for this round's clients, from the round loop's ``fit``."""
        ...

    def round_metrics(self, state: ServerState) -> Mapping[str, float]:
        """Metrics for the report of the round that produced ``state``."""
        ...

    def init_optimizer(self, params: Params) -> Mapping[str, Params]:
        """Server optimiser moments for a run starting at ``params`` (empty if none). A
        strategy makes them itself in its first ``server_update`` when the state has
        none, so a ``ServerState.initial`` needs nothing from the strategy."""
        ...

    def server_update(self, state: ServerState, aggregate: WeightedSum) -> ServerState:
        """Return ``state`` with new ``params`` and ``optimizer``; ``round`` is left alone."""
        ...

    def broadcast(self, state: ServerState) -> Params:
        """What the sampled clients are sent: the global params, and any server quantity
        a client algorithm needs beside them (SCAFFOLD's control variate), as entries
        named ``@<name>/<param>`` (``client.algorithms``)."""
        ...

    def payload_like(self, shared: Params) -> Params:
        """The layout of every update, given the shared part of the model: that part, and
        any further sums the strategy asks for (SCAFFOLD's Δc), as ``@<name>/`` entries."""
        ...


@dataclass(frozen=True)
class StrategyWrapper:
    """A strategy around ``inner`` (differential privacy, a robust rule): each part it does
    not change is ``inner``'s. Subclasses give ``name`` and ``server_update`` and override
    what they change."""

    inner: Strategy

    @property
    def payload(self) -> PayloadKind:
        return self.inner.payload

    @property
    def needs_individual_updates(self) -> bool:
        return self.inner.needs_individual_updates

    @property
    def proximal_mu(self) -> float:
        return self.inner.proximal_mu

    def configure_fit(self, state: ServerState, fit: FitConfig) -> FitConfig:
        return self.inner.configure_fit(state, fit)

    def round_metrics(self, state: ServerState) -> Mapping[str, float]:
        return self.inner.round_metrics(state)

    def init_optimizer(self, params: Params) -> Mapping[str, Params]:
        return self.inner.init_optimizer(params)

    def broadcast(self, state: ServerState) -> Params:
        return self.inner.broadcast(state)

    def payload_like(self, shared: Params) -> Params:
        return self.inner.payload_like(shared)


def hyperparameter(default: float, help: str) -> Any:
    """A strategy's hyperparameter: a dataclass field with its help text, which the run
    configuration reads (its ``[strategy]`` keys and flags come from these fields).

    It runs when the strategy classes are made, at import, before a mutation tool can
    switch a mutant of it on; its tests (``tests/strategies/test_hyperparameters.py``) read
    what it made instead, so mutmut leaves the line alone."""
    return field(default=default, metadata={"help": help})  # pragma: no mutate


@dataclass(frozen=True)
class SumStrategy:
    """The common parts of the sum-based strategies: clients send a delta (or a
    gradient) and train on their plain local loss unless a subclass says otherwise; no
    server optimiser state; nothing extra to report."""

    payload: ClassVar[PayloadKind] = "delta"
    needs_individual_updates: ClassVar[bool] = False

    @property
    def proximal_mu(self) -> float:
        return 0.0

    def configure_fit(self, state: ServerState, fit: FitConfig) -> FitConfig:
        return replace(fit, payload=self.payload, proximal_mu=self.proximal_mu)

    def round_metrics(self, state: ServerState) -> Mapping[str, float]:
        return {}

    def init_optimizer(self, params: Params) -> Mapping[str, Params]:
        return {}

    def broadcast(self, state: ServerState) -> Params:
        return state.params

    def payload_like(self, shared: Params) -> Params:
        return shared
