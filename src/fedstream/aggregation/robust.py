"""Robust aggregation rules: pure functions from the round's updates to one delta.

Each takes an :class:`UpdateMatrix` (row k = client k's payload) and returns one flat
float64 vector, computed column block by column block so memory stays bounded. They
ignore the clients' declared weights: a rule that a minority cannot steer must not let one
client outweigh the rest by claiming more examples.

- ``coordinate_median``: the median of every coordinate (Yin et al. 2018, "FedMedian");
- ``trimmed_mean``: every coordinate's mean after dropping its ``⌊β·n⌋`` largest and
  smallest values (Yin et al. 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from fedstream import checks
from fedstream.aggregation.updates import UpdateMatrix
from fedstream.errors import ConfigError

RobustRule = Callable[[UpdateMatrix], npt.NDArray[np.float64]]


def coordinate_median(updates: UpdateMatrix) -> npt.NDArray[np.float64]:
    """The coordinate-wise median of the updates (the mean of the middle two for an even
    count)."""
    out = np.empty(updates.rows.shape[1], np.float64)
    for columns, block in updates.column_blocks():
        out[columns] = np.median(block, axis=0)
    return out


def trimmed_count(count: int, beta: float) -> int:
    """How many values ``trimmed_mean`` drops from each end: ⌊β·n⌋, leaving at least one."""
    checks.in_unit_interval("trim_fraction", beta, include_zero=True, include_one=False)
    trimmed = math.floor(beta * count)
    if count - 2 * trimmed < 1:
        raise ConfigError("trim_fraction", beta, f"below 0.5 of the {count} updates (none left)")
    return trimmed


def trimmed_mean(updates: UpdateMatrix, beta: float) -> npt.NDArray[np.float64]:
    """Every coordinate's mean after dropping its ⌊β·n⌋ largest and ⌊β·n⌋ smallest values."""
    trimmed = trimmed_count(updates.count, beta)
    out = np.empty(updates.rows.shape[1], np.float64)
    for columns, block in updates.column_blocks():
        ordered = np.sort(block, axis=0)
        out[columns] = ordered[trimmed : updates.count - trimmed].mean(axis=0)
    return out


ROBUST_RULES = ("median", "trimmed_mean")
"""The rules ``Robust`` strategies can name."""
