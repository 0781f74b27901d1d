"""A user's own data, in the forms people hold it, as fedstream's ``ClientData``.

A client's data may be given as:

- a ``ClientData``;
- a training split alone: ``(x, y)`` of numpy arrays or torch tensors, a torch
  ``Dataset`` of ``(x, y)`` items, or a ``DataLoader`` of ``(x, y)`` batches;
- a training and a test split: ``(train, test)``, or ``{"train": …, "test": …}``, each
  split in one of the forms above.

Splits are read once into arrays (a federated simulation holds every client's rows in
memory). Classification labels become int64; regression targets float32 (float64 when
the features are).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from fedstream.data.base import ClientData, Task
from fedstream.errors import ConfigError

Array = npt.NDArray[Any]

FORMS = (
    "ClientData, (x, y), a torch Dataset or DataLoader of (x, y), (train, test) or "
    "{'train': …, 'test': …}"
)


def _array(value: Any) -> Array:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray | torch.Tensor)


def _pairs(items: Iterable[Any], what: str) -> tuple[list[Array], list[Array]]:
    """Stack an iterable of (x, y) items or batches into two arrays."""
    xs: list[Array] = []
    ys: list[Array] = []
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise ConfigError(what, type(item).__name__, "items or batches of (x, y)")
        xs.append(_array(item[0]))
        ys.append(_array(item[1]))
    if not xs:
        raise ConfigError(what, "an empty source", "at least one example")
    return xs, ys


def read_split(value: Any, what: str) -> tuple[Array, Array]:
    """One split as (x, y) arrays, from arrays, tensors, a Dataset or a DataLoader."""
    if isinstance(value, tuple | list) and len(value) == 2 and _is_array(value[0]):
        x, y = _array(value[0]), _array(value[1])
    elif isinstance(value, torch.utils.data.DataLoader):
        xs, ys = _pairs(value, what)
        x, y = np.concatenate(xs), np.concatenate(ys)
    elif isinstance(value, torch.utils.data.Dataset) and hasattr(value, "__len__"):
        xs, ys = _pairs((value[i] for i in range(len(value))), what)
        x, y = np.stack(xs), np.stack(ys)
    else:
        raise ConfigError(what, type(value).__name__, f"one of: {FORMS}")
    if x.shape[0] != y.shape[0]:
        raise ConfigError(
            what, f"{x.shape[0]} examples and {y.shape[0]} targets", "as many of each"
        )
    return x, y


def read_targets(y: Array, task: Task, x: Array, what: str) -> Array:
    """Targets as fedstream trains on them: int64 class labels, or float regression
    targets in the features' precision."""
    if task == "classification":
        if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
            raise ConfigError(what, f"labels of dtype {y.dtype}", "whole-number class labels")
        return y.astype(np.int64, copy=False)
    return y.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)


def as_client_data(value: Any, task: Task, client_id: str) -> ClientData:
    """Client ``client_id``'s data ``value`` (any form of the module docstring) as
    ``ClientData``; an error names the client, the split and what was expected."""
    what = f"clients[{client_id!r}]"
    if isinstance(value, ClientData):
        value.check(client_id)
        return value
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"train", "test"})
        if "train" not in value or unknown:
            raise ConfigError(what, sorted(value), "keys 'train' and optionally 'test'")
        train, test = value["train"], value.get("test")
    elif (
        isinstance(value, tuple | list)
        and len(value) == 2
        and not _is_array(value[0])
        and not isinstance(value[0], int | float)
    ):
        train, test = value
    else:
        train, test = value, None
    x, y = read_split(train, f"{what}.train")
    y = read_targets(y, task, x, f"{what}.train")
    if test is None:
        x_test, y_test = x[:0], y[:0]
    else:
        x_test, y_test = read_split(test, f"{what}.test")
        y_test = read_targets(y_test, task, x_test, f"{what}.test")
    data = ClientData(x, y, x_test, y_test)
    data.check(client_id)
    return data
