"""Server optimisers on the mean client delta: FedAvgM, FedAdagrad, FedAdam, FedYogi.

The mean delta Δ̄ is treated as a pseudo-gradient pointing downhill. FedAvgM is Hsu et al.
2019; the adaptive three are Algorithm 2 of Reddi et al., "Adaptive Federated
Optimization" (ICLR 2021), without bias correction, as in the paper:

    m ← β1·m + (1 − β1)·Δ̄
    v ← v + Δ̄²                          (Adagrad)
    v ← β2·v + (1 − β2)·Δ̄²              (Adam)
    v ← v − (1 − β2)·Δ̄²·sign(v − Δ̄²)    (Yogi)
    w ← w + η·m / (√v + τ)

with v initialised to τ² (the paper's "v₋₁ ≥ τ²").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from fedstream import checks
from fedstream.params import Params
from fedstream.strategies.base import SumStrategy, hyperparameter
from fedstream.types import ServerState, WeightedSum

AdaptiveVariant = Literal["adagrad", "adam", "yogi"]


def momentum_step(
    params: Params, momentum: Params, mean_delta: Params, server_lr: float, beta: float
) -> tuple[Params, Params]:
    """FedAvgM: m ← β·m + Δ̄, w ← w + η·m. Returns (new params, new momentum)."""
    new_momentum = momentum.zip_map(mean_delta, lambda m, d: beta * m + d)
    return params.zip_map(new_momentum, lambda w, m: w + server_lr * m), new_momentum


def adaptive_step(
    variant: AdaptiveVariant,
    params: Params,
    m: Params,
    v: Params,
    mean_delta: Params,
    *,
    server_lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[Params, Params, Params]:
    """One adaptive server step (module docstring). Returns (params, m, v)."""
    new_m = m.zip_map(mean_delta, lambda m_, d: beta1 * m_ + (1 - beta1) * d)
    square = mean_delta.map(np.square)
    if variant == "adagrad":
        new_v = v + square
    elif variant == "adam":
        new_v = v.zip_map(square, lambda v_, d2: beta2 * v_ + (1 - beta2) * d2)
    else:
        new_v = v.zip_map(square, lambda v_, d2: v_ - (1 - beta2) * d2 * np.sign(v_ - d2))
    step = new_m.zip_map(new_v, lambda m_, v_: server_lr * m_ / (np.sqrt(v_) + tau))
    return params + step, new_m, new_v


@dataclass(frozen=True)
class FedAvgM(SumStrategy):
    """FedAvg with server momentum (Hsu et al. 2019). Hsu et al. keep the effective step
    η/(1 − β) near 1, hence the default η = 0.1 with β = 0.9."""

    name: ClassVar[str] = "fedavgm"
    server_lr: float = hyperparameter(0.1, "server learning rate η")
    momentum: float = hyperparameter(0.9, "server momentum β")

    def __post_init__(self) -> None:
        checks.positive("server_lr", self.server_lr)
        checks.in_unit_interval("momentum", self.momentum, include_zero=True, include_one=False)

    def init_optimizer(self, params: Params) -> Mapping[str, Params]:
        return {"m": params.zeros_like()}

    def server_update(self, state: ServerState, aggregate: WeightedSum) -> ServerState:
        moments = state.optimizer or self.init_optimizer(state.params)
        params, momentum = momentum_step(
            state.params, moments["m"], aggregate.mean(), self.server_lr, self.momentum
        )
        return state.evolve(params=params, optimizer={"m": momentum})


@dataclass(frozen=True)
class _Adaptive(SumStrategy):
    variant: ClassVar[AdaptiveVariant]
    server_lr: float = hyperparameter(0.01, "server learning rate η")
    beta1: float = hyperparameter(0.9, "first-moment decay β1")
    beta2: float = hyperparameter(0.99, "second-moment decay β2 (Adam, Yogi)")
    tau: float = hyperparameter(1e-3, "adaptivity τ (v starts at τ²)")

    def __post_init__(self) -> None:
        checks.positive("server_lr", self.server_lr)
        checks.in_unit_interval("beta1", self.beta1, include_zero=True, include_one=False)
        checks.in_unit_interval("beta2", self.beta2, include_zero=True, include_one=False)
        checks.positive("tau", self.tau)

    def init_optimizer(self, params: Params) -> Mapping[str, Params]:
        return {"m": params.zeros_like(), "v": params.map(lambda a: np.full_like(a, self.tau**2))}

    def server_update(self, state: ServerState, aggregate: WeightedSum) -> ServerState:
        moments = state.optimizer or self.init_optimizer(state.params)
        params, m, v = adaptive_step(
            self.variant,
            state.params,
            moments["m"],
            moments["v"],
            aggregate.mean(),
            server_lr=self.server_lr,
            beta1=self.beta1,
            beta2=self.beta2,
            tau=self.tau,
        )
        return state.evolve(params=params, optimizer={"m": m, "v": v})


@dataclass(frozen=True)
class FedAdagrad(_Adaptive):
    """Reddi et al.'s FedAdagrad: v accumulates every Δ̄²."""

    name: ClassVar[str] = "fedadagrad"
    variant: ClassVar[AdaptiveVariant] = "adagrad"


@dataclass(frozen=True)
class FedAdam(_Adaptive):
    """Reddi et al.'s FedAdam: v is an exponential average of Δ̄²."""

    name: ClassVar[str] = "fedadam"
    variant: ClassVar[AdaptiveVariant] = "adam"


@dataclass(frozen=True)
class FedYogi(_Adaptive):
    """Reddi et al.'s FedYogi: v moves additively towards Δ̄², controlled by sign(v − Δ̄²)."""

    name: ClassVar[str] = "fedyogi"
    variant: ClassVar[AdaptiveVariant] = "yogi"
