"""SCAFFOLD (Karimireddy et al. 2020): drift correction with control variates.

The server keeps a control variate c (in ``ServerState.optimizer["c"]``, zero at first)
and sends it with the model; each client keeps its own c_i and corrects every local
gradient by c − c_i (``client.algorithms``), then sends its model delta Δy_i and the change
of its variate Δc_i beside it (one payload, so every secure sum carries both). The server
steps

    x ← x + η_g · mean(Δy)          c ← c + (|S|/N) · mean(Δc)

with the means weighted by examples as FedAvg's is (uniform under client-level DP), |S|
the clients aggregated and N all clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

from fedstream import checks
from fedstream.client.algorithms import CONTROL, join_extras, split_extras
from fedstream.errors import RoundFailedError
from fedstream.params import Params
from fedstream.strategies.base import SumStrategy, hyperparameter
from fedstream.strategies.fedavg import apply_mean_delta
from fedstream.types import FitConfig, ServerState, WeightedSum


@dataclass(frozen=True)
class Scaffold(SumStrategy):
    """SCAFFOLD with server learning rate ``server_lr`` (η_g; 1 is the paper's default)."""

    name: ClassVar[str] = "scaffold"
    server_lr: float = hyperparameter(1.0, "server learning rate η_g on the mean delta")

    def __post_init__(self) -> None:
        checks.positive("server_lr", self.server_lr)

    def configure_fit(self, state: ServerState, fit: FitConfig) -> FitConfig:
        return replace(super().configure_fit(state, fit), algorithm="scaffold")

    def init_optimizer(self, params: Params) -> Mapping[str, Params]:
        return {"c": params.zeros_like()}

    def control(self, state: ServerState) -> Params:
        """The server's control variate c, shaped like the shared params."""
        return (state.optimizer or self.init_optimizer(state.params))["c"]

    def broadcast(self, state: ServerState) -> Params:
        return join_extras(state.params, {CONTROL: self.control(state)})

    def payload_like(self, shared: Params) -> Params:
        return join_extras(shared, {CONTROL: shared})

    def server_update(self, state: ServerState, aggregate: WeightedSum) -> ServerState:
        delta, extras = split_extras(aggregate.mean())
        if CONTROL not in extras:
            raise RoundFailedError(state.round + 1, "SCAFFOLD's updates carry no Δc")
        population = max(aggregate.population, aggregate.count)
        share = aggregate.count / population
        control = self.control(state)
        new_control = control.zip_map(extras[CONTROL], lambda c, d: c + share * d)
        params = apply_mean_delta(state.params, delta, self.server_lr)
        return state.evolve(params=params, optimizer={"c": new_control})
