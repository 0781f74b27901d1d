"""Client data and federated data sets as plain numpy arrays."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import numpy.typing as npt

from fedstream.errors import ConfigError

Array = npt.NDArray[Any]
Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class ClientData:
    """One client's local data: features ``x_*`` of shape (n, …) and targets ``y_*`` of shape
    (n,) (int64 class labels for classification, float for regression)."""

    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array

    def check(self, client_id: str) -> None:
        """Raise ``ConfigError`` naming the client if its data cannot be trained on."""
        field = f"clients[{client_id!r}]"
        if self.x_train.shape[0] == 0:
            raise ConfigError(field, "0 training examples", "at least one training example")
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            if x.shape[0] != y.shape[0]:
                raise ConfigError(
                    f"{field}.y_{split}",
                    f"{y.shape[0]} targets",
                    f"one per example of x_{split} ({x.shape[0]})",
                )
        if self.x_test.shape[0] and self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise ConfigError(
                f"{field}.x_test",
                f"examples of shape {self.x_test.shape[1:]}",
                f"the shape of x_train's examples, {self.x_train.shape[1:]}",
            )

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])


class Clients(Mapping[str, ClientData]):
    """Many clients' data as index ranges into pooled arrays, built on demand.

    A client's ``ClientData`` is made only when asked for (a fancy-index copy of its rows),
    so 100,000 clients cost a few arrays, not 100,000 objects. ``train_index`` and
    ``test_index`` hold every client's rows of ``x``/``y`` back to back; client k's are
    ``train_index[train_offsets[k]:train_offsets[k + 1]]``. Names are ``names[k]``.
    """

    def __init__(
        self,
        names: Sequence[str],
        x: Array,
        y: Array,
        train_index: Array,
        train_offsets: Array,
        test_index: Array,
        test_offsets: Array,
    ) -> None:
        count = len(names)
        for field, offsets, index in (
            ("train_offsets", train_offsets, train_index),
            ("test_offsets", test_offsets, test_index),
        ):
            if offsets.shape != (count + 1,) or offsets[0] != 0 or offsets[-1] != len(index):
                raise ConfigError(
                    field,
                    f"shape {offsets.shape}, ends {offsets[0]}…{offsets[-1]}",
                    f"{count + 1} offsets from 0 to {len(index)}",
                )
        self.names = list(names)
        self._position = {name: k for k, name in enumerate(self.names)}
        self.x, self.y = x, y
        self.train_index, self.train_offsets = train_index, train_offsets
        self.test_index, self.test_offsets = test_index, test_offsets

    def __getitem__(self, name: str) -> ClientData:
        k = self._position[name]
        train = self.train_index[self.train_offsets[k] : self.train_offsets[k + 1]]
        test = self.test_index[self.test_offsets[k] : self.test_offsets[k + 1]]
        if not len(test):  # an empty view costs a fifth of an empty fancy index
            return ClientData(self.x[train], self.y[train], self.x[:0], self.y[:0])
        return ClientData(self.x[train], self.y[train], self.x[test], self.y[test])

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._position

    @property
    def train_sizes(self) -> npt.NDArray[np.int64]:
        return np.diff(self.train_offsets)

    @property
    def test_sizes(self) -> npt.NDArray[np.int64]:
        return np.diff(self.test_offsets)

    def cohort(self, names: Sequence[str]) -> PooledCohort:
        """The clients ``names``, in that order, as a ``PooledCohort`` (nothing copied yet)."""
        position = self._position
        return PooledCohort(self, np.array([position[name] for name in names], dtype=np.int64))

    def check(self) -> None:
        """``ClientData.check`` for every client at once, without building any."""
        empty = np.flatnonzero(self.train_sizes == 0)
        if len(empty):
            field = f"clients[{self.names[int(empty[0])]!r}]"
            raise ConfigError(field, "0 training examples", "at least one training example")


class PooledCohort(Sequence[ClientData]):
    """Some clients of a ``Clients`` pool, in a given order, read only when asked.

    A cohort trainer pads its clients' training rows into one (K, longest, …) array;
    ``padded_train`` gathers them there straight from the pool in one pass, where a list of
    ``ClientData`` would copy each client's rows twice (into its object, then into the
    pad) and build an object a client. Indexing still gives one client's ``ClientData``,
    exactly as the pool does, for code that wants one client at a time.
    """

    def __init__(self, pool: Clients, positions: npt.NDArray[np.int64]) -> None:
        self.pool = pool
        self.positions = positions

    def __len__(self) -> int:
        return len(self.positions)

    @overload
    def __getitem__(self, index: int) -> ClientData: ...
    @overload
    def __getitem__(self, index: slice) -> PooledCohort: ...
    def __getitem__(self, index: int | slice) -> ClientData | PooledCohort:
        if isinstance(index, slice):
            return PooledCohort(self.pool, self.positions[index])
        return self.pool[self.pool.names[int(self.positions[index])]]

    @property
    def train_sizes(self) -> npt.NDArray[np.int64]:
        offsets = self.pool.train_offsets
        return offsets[self.positions + 1] - offsets[self.positions]

    def reordered(self, order: Sequence[int] | npt.NDArray[np.int64]) -> PooledCohort:
        """The same clients in the order ``order`` gives (positions into this cohort)."""
        return PooledCohort(self.pool, self.positions[np.asarray(order, dtype=np.int64)])

    def padded_train(self) -> tuple[Array, Array]:
        """Every client's training features and targets, (K, longest, …) and (K, longest),
        zero past each client's own rows, in one gather from the pool."""
        sizes = self.train_sizes
        longest = int(sizes.max()) if len(sizes) else 0
        slot = np.arange(longest)[None, :]
        real = slot < sizes[:, None]  # (K, longest)
        # each slot's place in train_index, a padding slot pointing at its client's last
        # row (any row would do: it is zeroed after one gather, a fifth of a masked copy)
        starts = self.pool.train_offsets[self.positions][:, None]
        rows = self.pool.train_index[starts + np.minimum(slot, sizes[:, None] - 1)]
        xs = np.take(self.pool.x, rows, axis=0)
        ys = np.take(self.pool.y, rows, axis=0)
        if not real.all():
            xs[~real] = 0
            ys[~real] = 0
        return xs, ys


def cohort_train_sizes(datasets: Sequence[ClientData]) -> npt.NDArray[np.int64]:
    """Each client's number of training examples, (K,), without building a pooled
    cohort's clients."""
    if isinstance(datasets, PooledCohort):
        return datasets.train_sizes
    return np.array([d.num_train for d in datasets], dtype=np.int64)


def cohort_in_order(
    datasets: Sequence[ClientData], order: Sequence[int] | npt.NDArray[np.int64]
) -> Sequence[ClientData]:
    """The clients' data in the order ``order`` gives, without building a pooled
    cohort's clients."""
    if isinstance(datasets, PooledCohort):
        return datasets.reordered(order)
    return [datasets[int(k)] for k in order]


def padded_train(datasets: Sequence[ClientData]) -> tuple[Array, Array]:
    """The clients' training features and targets stacked into (K, longest, …) and
    (K, longest), zero-padded past each client's rows: one gather for a pooled cohort,
    a copy a client otherwise."""
    if isinstance(datasets, PooledCohort):
        return datasets.padded_train()
    return _padded([d.x_train for d in datasets]), _padded([d.y_train for d in datasets])


def _padded(arrays: Sequence[Array]) -> Array:
    """Stack arrays of shape (n_k, …) into (K, max n_k, …), zero-padded."""
    longest = max(a.shape[0] for a in arrays)
    out = np.zeros((len(arrays), longest, *arrays[0].shape[1:]), dtype=arrays[0].dtype)
    for k, a in enumerate(arrays):
        out[k, : a.shape[0]] = a
    return out


def check_clients(clients: Mapping[str, ClientData]) -> None:
    """Raise ``ConfigError`` naming the first client whose data cannot be trained on."""
    if isinstance(clients, Clients):
        clients.check()
        return
    for client_id, data in clients.items():
        data.check(client_id)


def packed(parts: Sequence[Array]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Index arrays back to back, and the offsets where each starts (``Clients``' layout)."""
    offsets = np.zeros(len(parts) + 1, dtype=np.int64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    index = np.concatenate(parts).astype(np.int64) if len(parts) else np.zeros(0, np.int64)
    return index, offsets


def subset(clients: Mapping[str, ClientData], names: Sequence[str]) -> Mapping[str, ClientData]:
    """Only the clients ``names``, holding only their rows: a ``Clients`` is compacted
    into new pooled arrays, so the rest of the data can be freed."""
    if not isinstance(clients, Clients):
        return {name: clients[name] for name in names}
    positions = [clients._position[name] for name in names]
    train_rows, train_offsets = packed(
        [clients.train_index[clients.train_offsets[k] : clients.train_offsets[k + 1]]
         for k in positions]
    )  # fmt: skip
    test_rows, test_offsets = packed(
        [clients.test_index[clients.test_offsets[k] : clients.test_offsets[k + 1]]
         for k in positions]
    )  # fmt: skip
    rows = np.concatenate([train_rows, test_rows])
    return Clients(
        list(names), clients.x[rows], clients.y[rows],
        np.arange(len(train_rows)), train_offsets,
        np.arange(len(train_rows), len(rows)), test_offsets,
    )  # fmt: skip


def train_sizes_of(clients: Mapping[str, ClientData], names: Sequence[str]) -> list[int]:
    """The named clients' numbers of training examples, in order, without building their
    data if lazy (one array lookup for pooled clients)."""
    if isinstance(clients, Clients):
        sizes: list[int] = clients.cohort(names).train_sizes.tolist()
        return sizes
    return [clients[name].num_train for name in names]


def train_sizes(clients: Mapping[str, ClientData]) -> npt.NDArray[np.int64]:
    """Every client's number of training examples, in iteration order."""
    if isinstance(clients, Clients):
        return clients.train_sizes
    return np.array([c.num_train for c in clients.values()], dtype=np.int64)


@dataclass(frozen=True)
class FederatedDataset:
    """Clients' local data plus a held-out set the server may use for centralised
    evaluation (data no client holds)."""

    name: str
    task: Task
    clients: Mapping[str, ClientData]
    x_heldout: Array
    y_heldout: Array
    num_features: int
    num_outputs: int  # classes for classification, 1 for regression

    def describe(self) -> dict[str, Any]:
        sizes = train_sizes(self.clients)
        return {
            "dataset": self.name,
            "clients": len(self.clients),
            "train_examples": int(sizes.sum()),
            "heldout_examples": int(self.x_heldout.shape[0]),
            "client_train_min": int(sizes.min()),
            "client_train_median": float(np.median(sizes)),
            "client_train_max": int(sizes.max()),
        }
