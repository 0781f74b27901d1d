"""Data sets that ship inside packages (no downloads at run time), split into clients.

Every data set is a *source*: pooled arrays ``x``, ``y`` and, where the data has natural
clients (a generator's clients, a play's roles), a ``groups`` column. :func:`federate` holds
out a share for the server, partitions the rest (IID, Dirichlet label skew, shards,
quantity skew, or natural), optionally skews each client's features with noise of its own
scale, and gives each client a local test split.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedstream import checks
from fedstream.data import shakespeare
from fedstream.data.base import ClientData, Clients, FederatedDataset, Task, packed
from fedstream.data.cache import cache_dir, cached_arrays
from fedstream.data.partition import (
    dirichlet_partition,
    iid_partition,
    natural_partition,
    quantity_skew_partition,
    shard_partition,
)
from fedstream.data.synthetic import synthetic_clients
from fedstream.errors import ConfigError

log = logging.getLogger("fedstream.data")
Array = npt.NDArray[Any]
PARTITIONS = ("iid", "dirichlet", "shards", "quantity", "natural")
SHAKESPEARE_MIN_SAMPLES = 100  # roles with fewer windows are left out, as LEAF drops tiny users
LEAF_MIN_SAMPLES = 64  # LEAF's paper experiment drops sampled users under 64 windows (-k 64)


@dataclass(frozen=True)
class Source:
    """Pooled examples; ``groups[i]`` names the natural client of example i, if any."""

    task: Task
    x: Array
    y: Array
    groups: Array | None = None


def _standardise(x: Array) -> Array:
    """Zero mean, unit variance per feature, computed on the pooled data. A deployment would
    agree on the scaling beforehand (or compute it with a federated mean); here it only sets
    the features on a common scale."""
    standardised: Array = (x - x.mean(axis=0)) / x.std(axis=0)
    return standardised


def digits_source(**_: Any) -> Source:
    """sklearn's 8×8 digits: x (1797, 64) float32 in [0, 1], 10 classes. Read from the
    table sklearn ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixels and the
    label a row) without importing sklearn, whose import costs each client process of a
    deployment about a second; through sklearn's own loader if the table is not there."""
    table = _sklearn_table("digits.csv.gz")
    if table is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x, y = bunch.data, bunch.target
    else:
        x, y = table[:, :-1], table[:, -1]
    return Source("classification", (x / 16.0).astype(np.float32), y.astype(np.int64))


def _sklearn_table(name: str) -> Array | None:
    """A CSV table among the data files of the installed sklearn, located, not imported."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "datasets" / "data" / name
        if path.is_file():
            with gzip.open(path, "rt") as rows:
                table: Array = np.loadtxt(rows, delimiter=",")
            return table
    return None


def breast_cancer_source(**_: Any) -> Source:
    """sklearn's Wisconsin breast cancer: x (569, 30) standardised float32, 2 classes."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return Source(
        "classification", _standardise(bunch.data).astype(np.float32), bunch.target.astype(np.int64)
    )


def wine_source(**_: Any) -> Source:
    """sklearn's wine: x (178, 13) standardised float32, 3 classes."""
    from sklearn.datasets import load_wine

    bunch = load_wine()
    return Source(
        "classification", _standardise(bunch.data).astype(np.float32), bunch.target.astype(np.int64)
    )


def diabetes_source(**_: Any) -> Source:
    """sklearn's diabetes regression: x (442, 10) standardised, y disease progression, both
    float64 (the least-squares anchor needs the precision)."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    return Source(
        "regression", _standardise(bunch.data.astype(np.float64)), bunch.target.astype(np.float64)
    )


MNIST1D_SEED = 42
"""The seed of MNIST-1D's published data set (``mnist1d.data.get_dataset_args``)."""


def mnist1d_source(**_: Any) -> Source:
    """MNIST-1D (Greydanus 2020, "Scaling Down Deep Learning"): 5,000 signals of length
    40, each one of ten digit templates padded, scaled, translated, sheared and noised by
    the paper's own generator (the ``mnist1d`` package; seed 42, its published set), x
    float32 standardised as the package does, 10 classes. It is much harder than digits
    for an MLP (the paper: logistic regression 32 %, MLP 68 %, CNN 94 %). Made once, then
    read from ``cache_dir()/mnist1d``."""
    path = cache_dir() / "mnist1d" / f"mnist1d-{MNIST1D_SEED}.npz"
    stored = cached_arrays(path, lambda: dict(zip("xy", _generate_mnist1d(), strict=True)))
    return Source("classification", stored["x"], stored["y"])


def _generate_mnist1d() -> tuple[Array, Array]:
    """The package's ``make_dataset``, train and test pooled. It seeds the global
    ``random`` and ``numpy.random`` generators; their states are put back afterwards."""
    from mnist1d.data import get_dataset_args, make_dataset

    saved = random.getstate(), np.random.get_state()
    try:
        args = get_dataset_args()
        args.seed = MNIST1D_SEED
        made = make_dataset(args)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    x = np.concatenate([made["x"], made["x_test"]]).astype(np.float32)
    y = np.concatenate([made["y"], made["y_test"]]).astype(np.int64)
    return x, y


def _synthetic(iid: bool) -> Callable[..., Source]:
    def build(
        rng: np.random.Generator,
        num_clients: int,
        synthetic_alpha: float = 1.0,
        synthetic_beta: float = 1.0,
        synthetic_samples: int | None = None,
        **_: Any,
    ) -> Source:
        x, y, sizes = synthetic_clients(
            num_clients, synthetic_alpha, synthetic_beta, rng, iid=iid, samples=synthetic_samples
        )
        return Source("classification", x, y, np.repeat(np.arange(num_clients), sizes))

    build.__doc__ = (
        f"FedProx's Synthetic(α, β){' IID variant' if iid else ''}: 60 features, 10 classes."
    )
    return build


SOURCES: dict[str, Callable[..., Source]] = {
    "digits": digits_source,
    "breast_cancer": breast_cancer_source,
    "wine": wine_source,
    "diabetes": diabetes_source,
    "mnist1d": mnist1d_source,
    "synthetic": _synthetic(iid=False),
    "synthetic_iid": _synthetic(iid=True),
}
DATASETS = (*SOURCES, "shakespeare")
NATURAL_ONLY = ("synthetic", "synthetic_iid", "shakespeare")
REGRESSION = ("diabetes",)
"""Data sets whose targets are numbers: label-skew partitions do not apply to them."""


def check_partition(dataset: str, partition: str) -> None:
    """A partition the data set supports: natural clients where it has them (and only
    then), and no label skew (Dirichlet, shards) over numeric targets."""
    checks.one_of("partition", partition, list(PARTITIONS))
    if dataset in NATURAL_ONLY and partition != "natural":
        raise ConfigError("partition", partition, f"'natural' for the data set {dataset!r}")
    if dataset in REGRESSION and partition in ("dirichlet", "shards"):
        raise ConfigError(
            "partition", partition, f"'iid' or 'quantity' for the regression data set {dataset!r}"
        )
    if partition == "natural" and dataset not in NATURAL_ONLY:
        raise ConfigError(
            "partition",
            partition,
            f"one of iid, dirichlet, shards, quantity: {dataset!r} has no natural clients",
        )


def check_feature_noise(dataset: str, sigma: float) -> None:
    """A feature skew's σ: not negative, and 0 for data whose features are token ids."""
    checks.non_negative("feature_noise", sigma)
    if sigma > 0 and dataset == "shakespeare":
        raise ConfigError("feature_noise", sigma, "0 with shakespeare (its features are token ids)")


def check_shakespeare_fraction(dataset: str, fraction: float | None) -> None:
    """LEAF's sampling fraction is a number in (0, 1], and only for Shakespeare."""
    if fraction is None:
        return
    checks.in_unit_interval("shakespeare_fraction", fraction, include_zero=False, include_one=True)
    if dataset != "shakespeare":
        raise ConfigError("shakespeare_fraction", fraction, "unset unless dataset is shakespeare")


def _split(indices: Array, test_fraction: float, rng: np.random.Generator) -> tuple[Array, Array]:
    """Shuffle ``indices`` and cut off ``test_fraction`` of them (floor) as the test part."""
    shuffled = rng.permutation(indices)
    num_test = int(len(shuffled) * test_fraction)
    return np.sort(shuffled[num_test:]), np.sort(shuffled[:num_test])


def _client_names(count: int) -> list[str]:
    width = len(str(count - 1))
    return [f"client-{number:0{width}d}" for number in range(count)]


def federate(
    name: str,
    num_clients: int,
    partition: str,
    rng: np.random.Generator,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    quantity_sigma: float = 1.0,
    feature_noise: float = 0.0,
    heldout_fraction: float = 0.2,
    client_test_fraction: float = 0.2,
    synthetic_alpha: float = 1.0,
    synthetic_beta: float = 1.0,
    synthetic_samples: int | None = None,
    shakespeare_source: str | Path | None = None,
    shakespeare_edition: str = "modern",
    shakespeare_fraction: float | None = None,
) -> FederatedDataset:
    """Load data set ``name`` and split it over ``num_clients`` clients.

    ``heldout_fraction`` of the pooled data goes to the server for centralised evaluation;
    the rest is partitioned (``iid``, ``dirichlet`` with ``alpha``, ``shards`` with
    ``shards_per_client``, ``quantity`` with lognormal ``quantity_sigma``, or ``natural``) and
    each client keeps ``client_test_fraction`` of its share as a local test split.
    ``feature_noise`` σ > 0 skews features as NIID-Bench does (Li et al. 2022): client k of
    N adds Gaussian noise of standard deviation σ·(k + 1)/N to every feature of its
    examples (train and test); the server's held-out examples stay clean.
    Synthetic and Shakespeare have natural clients only; for them ``num_clients`` is how
    many are generated (Synthetic) or drawn from all roles (Shakespeare), unless
    ``shakespeare_fraction`` asks for LEAF's own sampling (see :func:`leaf_sample`).
    """
    checks.one_of("dataset", name, list(DATASETS))
    check_partition(name, partition)
    checks.positive_int("num_clients", num_clients)
    checks.in_unit_interval(
        "heldout_fraction", heldout_fraction, include_zero=True, include_one=False
    )
    checks.in_unit_interval(
        "client_test_fraction", client_test_fraction, include_zero=True, include_one=False
    )
    check_shakespeare_fraction(name, shakespeare_fraction)
    check_feature_noise(name, feature_noise)
    if name == "shakespeare":
        return _federate_shakespeare(
            num_clients,
            rng,
            heldout_fraction,
            client_test_fraction,
            shakespeare_source,
            shakespeare_edition,
            shakespeare_fraction,
        )
    source = SOURCES[name](
        rng=rng,
        num_clients=num_clients,
        synthetic_alpha=synthetic_alpha,
        synthetic_beta=synthetic_beta,
        synthetic_samples=synthetic_samples,
    )
    x, y = source.x, source.y
    pool, heldout = _split(np.arange(len(y)), heldout_fraction, rng)
    if partition == "iid":
        parts = [pool[p] for p in iid_partition(len(pool), num_clients, rng)]
    elif partition == "dirichlet":
        parts = [pool[p] for p in dirichlet_partition(y[pool], num_clients, alpha, rng)]
    elif partition == "shards":
        parts = [pool[p] for p in shard_partition(y[pool], num_clients, shards_per_client, rng)]
    elif partition == "quantity":
        parts = [
            pool[p] for p in quantity_skew_partition(len(pool), num_clients, quantity_sigma, rng)
        ]
    else:
        assert source.groups is not None
        parts = [pool[p] for p in natural_partition(source.groups[pool])]
        lost = len(np.unique(source.groups)) - len(parts)
        if lost:
            log.warning(
                "%d of the %d natural clients of %r had every example held out for the "
                "server (heldout_fraction=%g) and are left out",
                lost, lost + len(parts), name, heldout_fraction,
            )  # fmt: skip
    if feature_noise > 0:
        x = noised_per_client(x, parts, feature_noise, rng)
    splits = [_split(part, client_test_fraction, rng) for part in parts]
    return FederatedDataset(
        name=name,
        task=source.task,
        clients=Clients(
            _client_names(len(parts)),
            x,
            y,
            *packed([train for train, _ in splits]),
            *packed([test for _, test in splits]),
        ),
        x_heldout=x[heldout],
        y_heldout=y[heldout],
        num_features=int(np.prod(x.shape[1:])),
        num_outputs=int(y.max()) + 1 if source.task == "classification" else 1,
    )


def noised_per_client(
    x: Array, parts: list[Array], sigma: float, rng: np.random.Generator
) -> Array:
    """A copy of ``x`` whose rows in ``parts[k]`` (disjoint) carry Gaussian noise of
    standard deviation σ·(k + 1)/len(parts), in ``x``'s dtype; other rows are as they were."""
    noised = x.copy()
    for k, rows in enumerate(parts):
        scale = sigma * (k + 1) / len(parts)
        noised[rows] += rng.normal(0.0, scale, size=(len(rows), *x.shape[1:])).astype(x.dtype)
    return noised


def ordered_split_roles(roles: Mapping[str, str]) -> list[str]:
    """The roles the ordered split may use, sorted: those with at least
    ``SHAKESPEARE_MIN_SAMPLES`` windows of text."""
    return sorted(
        r for r, t in roles.items() if len(t) - shakespeare.WINDOW >= SHAKESPEARE_MIN_SAMPLES
    )


def leaf_sample(sizes: Array, fraction: float, rng: np.random.Generator) -> tuple[Array, Array]:
    """LEAF's non-IID sampler (``data/utils/sample.py --niid``): roles in a random order,
    taken whole until their windows reach ``fraction`` of all windows; the last one is cut to
    its first windows so the total is exact. Returns the chosen role indices (in draw
    order) and how many leading windows each keeps."""
    target = int(fraction * int(sizes.sum()))
    order = rng.permutation(len(sizes))
    before = np.concatenate([[0], np.cumsum(sizes[order])])
    count = int(np.searchsorted(before, target, side="left"))
    chosen = order[:count]
    kept = sizes[chosen].copy()
    if count:
        kept[-1] = target - before[count - 1]
    return chosen, kept


def _federate_shakespeare(
    num_clients: int,
    rng: np.random.Generator,
    heldout_fraction: float,
    client_test_fraction: float,
    source: str | Path | None,
    edition: str,
    fraction: float | None,
) -> FederatedDataset:
    """Clients are ``num_clients`` roles drawn from those with at least
    ``SHAKESPEARE_MIN_SAMPLES`` windows, each role's windows split in order (train, then
    test), so a test window overlaps training text only at the boundary.

    With ``fraction`` the data is built as LEAF's paper experiment builds it instead
    (``preprocess.sh -s niid --sf 0.05 -k 64 -t sample``): :func:`leaf_sample` over every
    role, roles under ``LEAF_MIN_SAMPLES`` windows dropped, and each role's windows split
    at random (``client_test_fraction`` of them, floored, for testing). Test windows then
    share 79 of their 80 characters with training windows, which makes the task easier;
    ``num_clients`` is not used.

    Windows stay views of each role's text where they can. ``heldout_fraction`` of the
    roles that were not drawn give the server's held-out set (capped at 10,000 windows)."""
    roles = shakespeare.load_roles(source, edition)
    clients: dict[str, ClientData] = {}
    if fraction is None:
        eligible = ordered_split_roles(roles)
        if num_clients > len(eligible):
            raise ConfigError(
                "num_clients",
                num_clients,
                f"at most {len(eligible)}, the roles with >= {SHAKESPEARE_MIN_SAMPLES} samples",
            )
        order = rng.permutation(len(eligible))
        for role in [eligible[i] for i in sorted(order[:num_clients])]:
            x, y = shakespeare.role_examples(roles[role])
            cut = len(y) - int(len(y) * client_test_fraction)
            clients[role] = ClientData(x[:cut], y[:cut], x[cut:], y[cut:])
        others = [eligible[i] for i in order[num_clients:]]
    else:
        names = sorted(roles)
        sizes = np.array([max(len(roles[r]) - shakespeare.WINDOW, 0) for r in names])
        chosen, kept = leaf_sample(sizes, fraction, rng)
        for index, keep in sorted(zip(chosen.tolist(), kept.tolist(), strict=True)):
            if keep < LEAF_MIN_SAMPLES:
                continue
            x, y = shakespeare.role_examples(roles[names[index]])
            train, test = _split(np.arange(keep), client_test_fraction, rng)
            clients[names[index]] = ClientData(x[train], y[train], x[test], y[test])
        taken = set(chosen.tolist())
        others = [names[i] for i in rng.permutation(len(names)) if i not in taken]
        others = [r for r in others if len(roles[r]) - shakespeare.WINDOW > 0]
    heldout_roles = others[: round(len(others) * heldout_fraction)]
    held = [shakespeare.role_examples(roles[r]) for r in heldout_roles]
    if held:
        x_heldout = np.concatenate([x for x, _ in held])[:10_000]
        y_heldout = np.concatenate([y for _, y in held])[:10_000]
    else:
        x_heldout, y_heldout = np.zeros((0, shakespeare.WINDOW), np.uint8), np.zeros(0, np.int64)
    return FederatedDataset(
        name="shakespeare",
        task="classification",
        clients=clients,
        x_heldout=x_heldout,
        y_heldout=y_heldout,
        num_features=shakespeare.WINDOW,
        num_outputs=len(shakespeare.LEAF_VOCABULARY),
    )
