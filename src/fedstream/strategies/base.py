"""The strategy interface: what the client optimises, what it sends, how the server steps.

A strategy is a frozen dataclass of hyperparameters and nothing else. Round state (global
params, server optimiser moments) lives in ``ServerState``, passed in and returned, so a
strategy can be called out of order, shared between runs, and saved with a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Protocol, runtime_checkable

from fedstream.params import Params
from fedstream.types import PayloadKind, ServerState, WeightedSum


@runtime_checkable
class Strategy(Protocol):
    """Four parts of a federated algorithm (see DESIGN.md, "Aggregation is a weighted sum").

    - ``payload``: what clients send, ``"delta"`` or ``"gradient"``;
    - ``proximal_mu``: FedProx's μ for the client objective (0 for plain local loss);
    - the secure sum Σ weight·payload is done by the round loop's backend;
    - ``server_update``: new state from the old one and that sum.
    """

    name: ClassVar[str]
    payload: ClassVar[PayloadKind]
    needs_individual_updates: ClassVar[bool]

    @property
    def proximal_mu(self) -> float: ...

    def init_optimizer(self, params: Params) -> Mapping[str, Params]:
        """Server optimiser moments for a run starting at ``params`` (empty if none)."""
        ...

    def server_update(self, state: ServerState, aggregate: WeightedSum) -> ServerState:
        """Return ``state`` with new ``params`` and ``optimizer``; ``round`` is left alone."""
        ...
