"""Data sets that ship inside packages (no downloads), split into federated clients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_diabetes, load_digits

from fedstream import checks
from fedstream.data.base import ClientData, FederatedDataset, Task
from fedstream.data.partition import dirichlet_partition, iid_partition
from fedstream.errors import ConfigError

Array = npt.NDArray[Any]


def load_digits_arrays() -> tuple[Array, Array]:
    """sklearn's 8×8 digits: x (1797, 64) float32 scaled to [0, 1], y (1797,) int64."""
    bunch = load_digits()
    return (bunch.data / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def load_diabetes_arrays() -> tuple[Array, Array]:
    """sklearn's diabetes regression: x (442, 10) standardised to zero mean and unit variance,
    y (442,) disease progression, both float64 (the least-squares anchor needs the precision)."""
    bunch = load_diabetes()
    x = bunch.data.astype(np.float64)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x, bunch.target.astype(np.float64)


LOADERS: dict[str, tuple[Task, Callable[[], tuple[Array, Array]]]] = {
    "digits": ("classification", load_digits_arrays),
    "diabetes": ("regression", load_diabetes_arrays),
}
PARTITIONS = ("iid", "dirichlet")


def _split(indices: Array, test_fraction: float, rng: np.random.Generator) -> tuple[Array, Array]:
    """Shuffle ``indices`` and cut off ``test_fraction`` of them (floor) as the test part."""
    shuffled = rng.permutation(indices)
    num_test = int(len(shuffled) * test_fraction)
    return np.sort(shuffled[num_test:]), np.sort(shuffled[:num_test])


def federate(
    name: str,
    num_clients: int,
    partition: str,
    rng: np.random.Generator,
    alpha: float = 0.5,
    heldout_fraction: float = 0.2,
    client_test_fraction: float = 0.2,
) -> FederatedDataset:
    """Load data set ``name``, hold out ``heldout_fraction`` for the server, partition the rest
    over ``num_clients`` clients (``iid`` or ``dirichlet`` label skew with ``alpha``), and give
    each client a local test split of ``client_test_fraction``."""
    checks.one_of("dataset", name, list(LOADERS))
    checks.one_of("partition", partition, list(PARTITIONS))
    checks.in_unit_interval(
        "heldout_fraction", heldout_fraction, include_zero=True, include_one=False
    )
    checks.in_unit_interval(
        "client_test_fraction", client_test_fraction, include_zero=True, include_one=False
    )
    task, loader = LOADERS[name]
    x, y = loader()
    pool, heldout = _split(np.arange(len(y)), heldout_fraction, rng)
    if partition == "dirichlet" and task == "regression":
        raise ConfigError("partition", partition, f"'iid' for the regression data set {name!r}")
    if partition == "iid":
        parts = iid_partition(len(pool), num_clients, rng)
    else:
        parts = dirichlet_partition(y[pool], num_clients, alpha, rng)
    clients: dict[str, ClientData] = {}
    width = len(str(num_clients - 1))
    for number, part in enumerate(parts):
        train, test = _split(pool[part], client_test_fraction, rng)
        clients[f"client-{number:0{width}d}"] = ClientData(
            x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test]
        )
    return FederatedDataset(
        name=name,
        task=task,
        clients=clients,
        x_heldout=x[heldout],
        y_heldout=y[heldout],
        num_features=int(x.shape[1]),
        num_outputs=int(y.max()) + 1 if task == "classification" else 1,
    )
