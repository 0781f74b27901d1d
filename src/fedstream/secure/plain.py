"""The plaintext secure-sum backend: a running weighted sum, never a list of updates."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedstream.errors import RoundFailedError
from fedstream.params import Params
from fedstream.types import WeightedSum


class PlainSum:
    """Accumulates Σ weight·payload in float64 buffers as updates arrive.

    One instance lives for one round. Memory is one model-sized buffer whatever the number
    of clients. The total is cast back to the global params' dtypes at the end.
    """

    def __init__(self, like: Params) -> None:
        self._like = like
        self._buffers = {name: np.zeros(shape, np.float64) for name, shape, _ in like.spec}
        self._weight = 0.0
        self._count = 0
        self._extras: dict[str, float] = {}

    def add(self, payload: Params, weight: float, extras: Mapping[str, float] = {}) -> None:
        """Add ``weight · payload`` (and ``extras``, unweighted); the payload must match the
        global params' layout."""
        self._like.check_compatible(payload, "update payload", check_dtype=False)
        for name, buffer in self._buffers.items():
            buffer += weight * payload[name]
        self._weight += weight
        self._count += 1
        for key, value in extras.items():
            self._extras[key] = self._extras.get(key, 0.0) + value

    def result(self, round_number: int) -> WeightedSum:
        """The sum so far; an empty round is an error, never a silent zero update."""
        if self._count == 0 or self._weight <= 0:
            raise RoundFailedError(round_number, "no client update was aggregated")
        total = Params(
            {
                name: buf.astype(dtype)
                for (name, _, dtype), buf in zip(
                    self._like.spec, self._buffers.values(), strict=True
                )
            }
        )
        return WeightedSum(
            total=total, weight=self._weight, count=self._count, extras=dict(self._extras)
        )
