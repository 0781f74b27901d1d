"""FedRep (Collins et al. 2021, "Exploiting Shared Representations for Personalized
Federated Learning"): a shared body (the representation) learnt by the federation, and a
personal head on every client that never leaves it.

The server's side is FedAvg's over the body. What differs is the client's task
(``client.algorithms``): it first fits its own head to the body the server sent, the body
frozen, for ``head_epochs`` epochs; then it trains the body for the round's epochs, the
head frozen, and sends the body's delta. The head is the model's ``model.personal`` layers
(and those an app's ``personal`` predicate picks), as for FedPer, which trains head and
body together.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from fedstream import checks
from fedstream.strategies.base import hyperparameter
from fedstream.strategies.fedavg import FedAvg
from fedstream.types import FitConfig, ServerState


@dataclass(frozen=True)
class FedRep(FedAvg):
    """FedAvg's server step over the shared body; each client fits its personal head for
    ``head_epochs`` epochs before the round's epochs on the body (the paper uses many head
    steps and few body steps)."""

    name: ClassVar[str] = "fedrep"
    head_epochs: int = hyperparameter(
        5, "FedRep: epochs on the personal head, the body frozen, before those on the body"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.positive_int("head_epochs", self.head_epochs)

    def configure_fit(self, state: ServerState, fit: FitConfig) -> FitConfig:
        fit = super().configure_fit(state, fit)
        return replace(fit, algorithm="fedrep", personal_epochs=self.head_epochs)
