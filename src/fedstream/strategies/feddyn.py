"""FedDyn (Acar et al. 2021, "Federated Learning Based on Dynamic Regularization").

Each client's objective is corrected so that its local optimum moves towards the global
one as training goes on: it minimises L_i(θ) − ⟨g_i, θ⟩ + α/2·‖θ − x‖², where g_i is its
gradient at its previous local optimum, kept in its own state (``client.algorithms``).
The server keeps h (in ``ServerState.optimizer["h"]``, zero at first), the mean over all
N clients of those g_i, and steps

    h ← h − α · (|S|/N) · mean(Δ)          x ← x + mean(Δ) − h/α

with the mean weighted by examples as FedAvg's is (the paper averages uniformly; under
client-level DP the weights are 1 and the two agree), |S| the clients aggregated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

from fedstream import checks
from fedstream.params import Params
from fedstream.strategies.base import SumStrategy, hyperparameter
from fedstream.types import FitConfig, ServerState, WeightedSum


@dataclass(frozen=True)
class FedDyn(SumStrategy):
    """FedDyn with regulariser weight ``alpha`` (α; the paper tries 0.1, 0.01, 0.001)."""

    name: ClassVar[str] = "feddyn"
    alpha: float = hyperparameter(0.01, "FedDyn's α: weight of the dynamic regulariser")

    def __post_init__(self) -> None:
        checks.positive("alpha", self.alpha)

    @property
    def proximal_mu(self) -> float:
        return self.alpha

    def configure_fit(self, state: ServerState, fit: FitConfig) -> FitConfig:
        return replace(super().configure_fit(state, fit), algorithm="feddyn")

    def init_optimizer(self, params: Params) -> Mapping[str, Params]:
        return {"h": params.zeros_like()}

    def server_update(self, state: ServerState, aggregate: WeightedSum) -> ServerState:
        if aggregate.weight <= 0:  # a round no client joined moves nothing
            return state
        mean = aggregate.mean()
        share = aggregate.count / max(aggregate.population, aggregate.count)
        h = (state.optimizer or self.init_optimizer(state.params))["h"]
        new_h = h.zip_map(mean, lambda h_, d: h_ - self.alpha * share * d)
        params = state.params.zip_map(mean, lambda w, d: w + d).zip_map(
            new_h, lambda w, h_: w - h_ / self.alpha
        )
        return state.evolve(params=params, optimizer={"h": new_h})
