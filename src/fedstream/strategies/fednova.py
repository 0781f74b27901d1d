"""FedNova (Wang et al. 2020): normalised averaging for clients that take different
numbers of local steps.

Plain FedAvg weights a client's delta by its examples, but a client with more data (or
more epochs) also takes more local steps, so its delta is longer and the average drifts
towards the optimum of the clients that ran longest: the global model then solves a
different objective from the one the weights say (the paper's "objective
inconsistency"). FedNova divides each delta by its client's a_i (its step count τ_i for
plain SGD; ``client.algorithms``) and scales the mean back by
τ_eff = Σ p_i·a_i, the clients' mean step count (p_i = w_i / Σ w):

    x ← x + η · τ_eff · Σ p_i · Δ_i / a_i

When every client takes the same number of steps this is FedAvg's step (up to rounding). Both
sums, Σ w_i·Δ_i/a_i and Σ w_i·a_i, travel in the one secure sum (the second as the
scalar extra ``"fednova.steps"``), so FedNova works under every secure-sum backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

from fedstream import checks
from fedstream.client.algorithms import NOVA_STEPS
from fedstream.errors import RoundFailedError
from fedstream.strategies.base import SumStrategy, hyperparameter
from fedstream.strategies.fedavg import apply_mean_delta
from fedstream.types import FitConfig, ServerState, WeightedSum


@dataclass(frozen=True)
class FedNova(SumStrategy):
    """FedNova with server learning rate ``server_lr`` (η) and, if ``mu`` > 0, FedProx's
    proximal term on the clients (FedNova then weighs each step as it decays)."""

    name: ClassVar[str] = "fednova"
    server_lr: float = hyperparameter(1.0, "server learning rate η on the normalised mean")
    mu: float = hyperparameter(0.0, "proximal coefficient μ of the client objective")

    def __post_init__(self) -> None:
        checks.positive("server_lr", self.server_lr)
        checks.non_negative("mu", self.mu)

    @property
    def proximal_mu(self) -> float:
        return self.mu

    def configure_fit(self, state: ServerState, fit: FitConfig) -> FitConfig:
        return replace(super().configure_fit(state, fit), algorithm="fednova")

    def server_update(self, state: ServerState, aggregate: WeightedSum) -> ServerState:
        if aggregate.weight <= 0:  # a round no client joined moves nothing
            return state
        if NOVA_STEPS not in aggregate.extras:
            raise RoundFailedError(state.round + 1, "FedNova's updates carry no step counts")
        mean_steps = aggregate.extras[NOVA_STEPS] / aggregate.weight  # τ_eff
        if not math.isfinite(mean_steps) or mean_steps < 0:  # a secure sum hides who lied
            raise RoundFailedError(
                state.round + 1, f"FedNova's mean step count is {mean_steps!r}, expected >= 0"
            )
        params = apply_mean_delta(state.params, aggregate.mean(), self.server_lr * mean_steps)
        return state.evolve(params=params)
