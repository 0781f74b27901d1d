"""Core value types: what a client sends, what the server keeps, what a round reports.

All are frozen dataclasses. A round takes a ``ServerState`` and returns a new one, so a run
can be saved after any round and resumed exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from fedstream.errors import ClientFailure
from fedstream.params import Params

PayloadKind = Literal["delta", "gradient"]
"""What a client sends: ``delta`` = local params − global params; ``gradient`` = ∇loss at
the global params."""


@dataclass(frozen=True)
class FitConfig:
    """What the server asks a client to do in one training task.

    ``batch_size = 0`` means full batch. ``proximal_mu > 0`` adds FedProx's
    μ/2·‖w − w_global‖² to the local objective. ``payload = "gradient"`` asks for one
    full-batch gradient at the global params (FedSGD) instead of local training.
    ``seed`` drives the client's own shuffling, so results do not depend on which
    process or in which order clients run.
    """

    local_epochs: int = 1
    batch_size: int = 10
    lr: float = 0.05
    proximal_mu: float = 0.0
    payload: PayloadKind = "delta"
    seed: int = 0


@dataclass(frozen=True)
class ClientUpdate:
    """One client's answer to a training task.

    ``payload`` is a delta or a gradient (see ``PayloadKind``), shaped like the global
    params. ``weight`` is the number of training examples it came from (FedAvg's n_k).
    ``metrics`` are plain numbers such as the mean training loss.
    """

    client_id: str
    round: int
    payload: Params
    weight: float
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateResult:
    """One client's evaluation of the global params on its local test split."""

    client_id: str
    round: int
    num_examples: int
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class WeightedSum:
    """What a secure-sum backend reveals: Σ weight·payload over ``count`` clients, and Σ weight.

    Strategies see only this, never individual updates, so every strategy works with every
    backend (plain, masking, homomorphic encryption).
    """

    total: Params
    weight: float
    count: int

    def mean(self) -> Params:
        """Σ w·x / Σ w, the example-weighted mean payload."""
        return self.total / self.weight


@dataclass(frozen=True)
class ServerState:
    """Everything the server needs to continue a run after round ``round``.

    ``round`` counts completed rounds (0 before the first). ``optimizer`` holds server
    optimiser moments by name (``"m"``, ``"v"``), each shaped like ``params``.
    ``accountant`` is the privacy accountant's history, one entry per noisy release.
    ``rng_state`` is the numpy ``PCG64`` bit-generator state used to sample clients and seed
    them, so a resumed run draws exactly what an uninterrupted one would.
    """

    round: int
    params: Params
    optimizer: Mapping[str, Params] = field(default_factory=dict)
    accountant: tuple[Mapping[str, float], ...] = ()
    rng_state: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def initial(cls, params: Params, seed: int | np.random.SeedSequence) -> ServerState:
        """State before round 1, with the generator seeded from ``seed``."""
        return cls(round=0, params=params, rng_state=np.random.PCG64(seed).state)

    def generator(self) -> np.random.Generator:
        """A fresh generator positioned at ``rng_state`` (the state itself is not touched)."""
        bit_generator = np.random.PCG64()
        bit_generator.state = dict(self.rng_state)  # type: ignore[assignment]
        return np.random.Generator(bit_generator)

    def evolve(self, **changes: Any) -> ServerState:
        return replace(self, **changes)


@dataclass(frozen=True)
class RoundReport:
    """What happened in one round: who was asked, who answered, who failed, traffic, times.

    ``bytes_down`` / ``bytes_up`` are the encoded sizes of what was sent to and received
    from clients (wire format, exact). ``times`` are wall-clock seconds per phase.
    ``metrics`` holds ``train_loss`` (weighted by examples), ``fed_*`` (federated evaluation on
    client test splits, weighted by examples) and ``central_*`` (held-out set).
    """

    round: int
    sampled: tuple[str, ...]
    completed: tuple[str, ...]
    failures: tuple[ClientFailure, ...]
    bytes_down: int
    bytes_up: int
    times: Mapping[str, float]
    metrics: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "round": self.round,
            "sampled": list(self.sampled),
            "completed": list(self.completed),
            "failures": [asdict(f) for f in self.failures],
            "bytes_down": self.bytes_down,
            "bytes_up": self.bytes_up,
            "times": dict(self.times),
            "metrics": dict(self.metrics),
        }
