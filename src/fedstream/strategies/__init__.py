"""Federated strategies as frozen hyperparameter records with pure server updates."""

from __future__ import annotations

import dataclasses
from typing import Any

from fedstream.errors import ConfigError
from fedstream.strategies.base import Strategy
from fedstream.strategies.ditto import Ditto
from fedstream.strategies.fedavg import FedAvg, FedProx, FedSGD
from fedstream.strategies.feddyn import FedDyn
from fedstream.strategies.fednova import FedNova
from fedstream.strategies.fedopt import FedAdagrad, FedAdam, FedAvgM, FedYogi
from fedstream.strategies.fedrep import FedRep
from fedstream.strategies.robust import Robust
from fedstream.strategies.scaffold import Scaffold

STRATEGIES: dict[str, type[Any]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        FedProx,
        FedSGD,
        FedAvgM,
        FedAdam,
        FedYogi,
        FedAdagrad,
        Scaffold,
        FedNova,
        FedDyn,
        Ditto,
        FedRep,
    )
}


def make_strategy(name: str, **hyperparameters: Any) -> Strategy:
    """Build the strategy called ``name`` from the hyperparameters it knows.

    Hyperparameters the strategy does not have are ignored only when their value is
    ``None``; any other unknown one is an error, so a typo does not silently do nothing.
    """
    if name not in STRATEGIES:
        raise ConfigError("strategy", name, f"one of {sorted(STRATEGIES)}")
    cls = STRATEGIES[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k, v in hyperparameters.items() if k not in known and v is not None)
    if unknown:
        raise ConfigError(
            unknown[0],
            hyperparameters[unknown[0]],
            f"no such hyperparameter for {name}; it takes {sorted(known)}",
        )
    given = {k: v for k, v in hyperparameters.items() if k in known and v is not None}
    strategy: Strategy = cls(**given)
    return strategy


__all__ = [
    "STRATEGIES",
    "Ditto",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedDyn",
    "FedNova",
    "FedProx",
    "FedRep",
    "FedSGD",
    "FedYogi",
    "Robust",
    "Scaffold",
    "Strategy",
    "make_strategy",
]
