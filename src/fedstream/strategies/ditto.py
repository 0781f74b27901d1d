"""Ditto (Li et al. 2021, "Ditto: Fair and Robust Federated Learning Through
Personalization"): a global model trained as FedAvg trains it, and on every client a
personal model v_i that minimises its own loss plus λ/2·‖v − x‖², x the global model.

The server's side is FedAvg's; what differs is the client's task (``client.algorithms``:
after the global pass it trains v_i, kept in its state, and it evaluates both). λ → 0
gives local training alone, λ → ∞ the global model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from fedstream import checks
from fedstream.strategies.base import hyperparameter
from fedstream.strategies.fedavg import FedAvg
from fedstream.types import FitConfig, ServerState


@dataclass(frozen=True)
class Ditto(FedAvg):
    """FedAvg's server step; each client's personal model is pulled towards the global
    one with strength ``personal_lambda`` (λ; the paper tries 0.05 to 2)."""

    name: ClassVar[str] = "ditto"
    personal_lambda: float = hyperparameter(
        0.1, "Ditto's λ: how strongly each personal model is pulled towards the global one"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.non_negative("personal_lambda", self.personal_lambda)

    def configure_fit(self, state: ServerState, fit: FitConfig) -> FitConfig:
        fit = super().configure_fit(state, fit)
        return replace(fit, algorithm="ditto", personal_lambda=self.personal_lambda)
