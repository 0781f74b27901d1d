"""Partitioners: split example indices among clients. Each takes the generator it uses."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fedstream import checks
from fedstream.errors import ConfigError

IndexArray = npt.NDArray[np.int64]


def iid_partition(
    num_examples: int, num_clients: int, rng: np.random.Generator
) -> list[IndexArray]:
    """Shuffle and deal indices into ``num_clients`` parts whose sizes differ by at most one."""
    checks.positive_int("num_clients", num_clients)
    if num_clients > num_examples:
        raise ConfigError(
            "num_clients", num_clients, f"at most the number of examples ({num_examples})"
        )
    order = rng.permutation(num_examples).astype(np.int64)
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def dirichlet_partition(
    labels: npt.NDArray[Any],
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
    min_size: int = 1,
    max_attempts: int = 100,
) -> list[IndexArray]:
    """Label-skewed split: for each class, client shares ~ Dirichlet(α·1).

    The draw follows NIID-Bench (Li et al. 2022): a client that already holds more than the
    average number of examples gets no more, and the whole draw is repeated until every
    client holds at least ``min_size`` examples. Smaller α gives more skew.
    """
    checks.positive_int("num_clients", num_clients)
    checks.positive("alpha", alpha)
    labels = np.asarray(labels)
    num_examples = labels.shape[0]
    if num_clients * min_size > num_examples:
        raise ConfigError(
            "num_clients",
            num_clients,
            f"at most {num_examples // max(min_size, 1)} so each of them can hold "
            f"{min_size} of the {num_examples} examples",
        )
    classes = np.unique(labels)
    cap = num_examples / num_clients
    for _ in range(max_attempts):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for cls in classes:
            members = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            shares = shares * np.array([len(p) < cap for p in parts])
            shares = shares / shares.sum()
            cuts = (np.cumsum(shares) * len(members)).astype(int)[:-1]
            for part, chunk in zip(parts, np.split(members, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise ConfigError(
        "alpha",
        alpha,
        f"a value that gives each of {num_clients} clients at least {min_size} examples "
        f"(none did in {max_attempts} draws); raise alpha or lower num_clients",
    )


def shard_partition(
    labels: npt.NDArray[Any], num_clients: int, shards_per_client: int, rng: np.random.Generator
) -> list[IndexArray]:
    """FedAvg paper's pathological non-IID split: sort examples by label, cut them into
    ``num_clients × shards_per_client`` equal shards, give each client that many at random.
    With 2 shards per client most clients see only two classes."""
    checks.positive_int("num_clients", num_clients)
    checks.positive_int("shards_per_client", shards_per_client)
    labels = np.asarray(labels)
    num_shards = num_clients * shards_per_client
    if num_shards > labels.shape[0]:
        raise ConfigError(
            "shards_per_client",
            shards_per_client,
            f"at most {labels.shape[0] // num_clients} so that each of the {num_shards} shards "
            f"holds an example ({labels.shape[0]} examples)",
        )
    by_label = np.argsort(labels, kind="stable").astype(np.int64)
    shards = np.array_split(by_label, num_shards)
    order = rng.permutation(num_shards)
    return [
        np.sort(np.concatenate([shards[s] for s in order[k::num_clients]]))
        for k in range(num_clients)
    ]


def quantity_skew_partition(
    num_examples: int,
    num_clients: int,
    sigma: float,
    rng: np.random.Generator,
    min_size: int = 2,
) -> list[IndexArray]:
    """IID labels, unequal sizes: client k's share ∝ lognormal(0, σ), each client holding at
    least ``min_size`` examples. σ = 0 gives equal sizes."""
    checks.positive_int("num_clients", num_clients)
    checks.non_negative("quantity_sigma", sigma)
    if num_clients * min_size > num_examples:
        raise ConfigError(
            "num_clients",
            num_clients,
            f"at most {num_examples // min_size} so each can hold {min_size} of the "
            f"{num_examples} examples",
        )
    shares = rng.lognormal(0.0, sigma, num_clients)
    spare = num_examples - num_clients * min_size
    sizes = min_size + np.floor(shares / shares.sum() * spare).astype(np.int64)
    sizes[np.argsort(-shares)[: num_examples - int(sizes.sum())]] += 1  # hand out the rest
    order = rng.permutation(num_examples).astype(np.int64)
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]


def natural_partition(groups: npt.NDArray[Any]) -> list[IndexArray]:
    """One client per distinct value of ``groups`` (a user or role column), in sorted order
    of the values."""
    values, inverse = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(inverse, kind="stable").astype(np.int64)  # ascending within a group
    return np.split(order, np.cumsum(np.bincount(inverse, minlength=len(values)))[:-1])
