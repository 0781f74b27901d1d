"""The plaintext secure-sum backend: a running weighted sum, never a list of updates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from fedstream.errors import RoundFailedError
from fedstream.params import Params
from fedstream.types import WeightedSum

CHUNK = 1 << 16  # elements: a chunk of the scaled update stays in L2 cache


def add_scaled(total: npt.NDArray[np.float64], values: npt.NDArray[Any], weight: float) -> None:
    """``total += weight * values`` in place, with the product rounded in ``values``' dtype
    as numpy rounds ``weight * values``. Large arrays go through in cache-sized chunks, so
    the product never makes a round trip through memory: 1.4× faster at 10M float32."""
    if values.size <= CHUNK:
        total += weight * values
        return
    if not total.flags.c_contiguous:
        raise ValueError("add_scaled needs a C-contiguous total (it writes through a view)")
    flat_total, flat_values = total.reshape(-1), values.reshape(-1)
    scaled = np.empty(CHUNK, dtype=(weight * flat_values[:1]).dtype)
    for start in range(0, flat_values.size, CHUNK):
        chunk = flat_values[start : start + CHUNK]
        product = scaled[: chunk.size]
        np.multiply(chunk, weight, out=product)
        flat_total[start : start + CHUNK] += product


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
            add_scaled(buffer, payload[name], weight)
        self._weight += weight
        self._count += 1
        for key, value in extras.items():
            self._extras[key] = self._extras.get(key, 0.0) + value

    def result(self, round_number: int) -> WeightedSum:
        """The sum so far; an empty round is an error, never a silent zero update."""
        if self._count == 0 or self._weight <= 0:
            raise RoundFailedError(round_number, "no client update was aggregated")
        total = Params(
            {name: self._buffers[name].astype(dtype) for name, _, dtype in self._like.spec}
        )
        return WeightedSum(
            total=total, weight=self._weight, count=self._count, extras=dict(self._extras)
        )
