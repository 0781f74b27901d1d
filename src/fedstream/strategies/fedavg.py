"""FedAvg, FedProx and FedSGD: the server moves along the example-weighted mean payload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedstream import checks
from fedstream.params import Params
from fedstream.strategies.base import SumStrategy, hyperparameter
from fedstream.types import PayloadKind, ServerState, WeightedSum


def apply_mean_delta(params: Params, mean_delta: Params, server_lr: float) -> Params:
    """w ← w + η·Δ̄ (FedAvg's server step; η = 1 is McMahan et al.'s plain average)."""
    return params.zip_map(mean_delta, lambda w, d: w + server_lr * d)


def apply_mean_gradient(params: Params, mean_gradient: Params, server_lr: float) -> Params:
    """w ← w − η·ḡ (FedSGD's server step: one gradient-descent step on the mean gradient)."""
    return params.zip_map(mean_gradient, lambda w, g: w - server_lr * g)


@dataclass(frozen=True)
class FedAvg(SumStrategy):
    """Federated averaging (McMahan et al. 2017): clients train locally and send
    ``weight · (w_local − w_global)``; the server adds the example-weighted mean delta."""

    name: ClassVar[str] = "fedavg"
    server_lr: float = hyperparameter(1.0, "server learning rate η on the mean delta")

    def __post_init__(self) -> None:
        checks.positive("server_lr", self.server_lr)

    def server_update(self, state: ServerState, aggregate: WeightedSum) -> ServerState:
        return state.evolve(params=apply_mean_delta(state.params, aggregate.mean(), self.server_lr))


@dataclass(frozen=True)
class FedProx(FedAvg):
    """FedProx (Li et al. 2020): the client minimises loss + μ/2·‖w − w_global‖²; the server
    step is FedAvg's."""

    name: ClassVar[str] = "fedprox"
    mu: float = hyperparameter(0.01, "proximal coefficient μ of the client objective")

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.non_negative("mu", self.mu)

    @property
    def proximal_mu(self) -> float:
        return self.mu


@dataclass(frozen=True)
class FedSGD(SumStrategy):
    """FedSGD (McMahan et al. 2017): each client sends one full-batch gradient at the global
    params; the server takes a gradient step of size ``server_lr`` on their weighted mean."""

    name: ClassVar[str] = "fedsgd"
    payload: ClassVar[PayloadKind] = "gradient"
    server_lr: float = hyperparameter(0.1, "server learning rate η on the mean gradient")

    def __post_init__(self) -> None:
        checks.positive("server_lr", self.server_lr)

    def server_update(self, state: ServerState, aggregate: WeightedSum) -> ServerState:
        new = apply_mean_gradient(state.params, aggregate.mean(), self.server_lr)
        return state.evolve(params=new)
