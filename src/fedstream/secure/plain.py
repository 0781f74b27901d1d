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


def add_scaled_rows(
    total: npt.NDArray[np.float64], rows: npt.NDArray[Any], weights: npt.NDArray[np.float64]
) -> None:
    """``total += weights[k] * rows[k]`` for k = 0, 1, … in turn, in place: bit for bit
    what ``add_scaled`` gives row by row (each product rounded in the rows' dtype, then
    added in float64 in row order), in a few array operations. Columns go through in
    chunks so the float64 products of K rows stay near cache size. ``rows`` has shape
    (K, *total.shape).

    ``np.add.reduce`` over the rows of a C-contiguous (K, c) array adds them in order
    when c ≥ 2 (its inner loop runs along a row); a single column it would sum pairwise,
    so a chunk one column wide is added with ``np.add.accumulate``, strictly in order
    (and twenty times slower per number, hence not used throughout)."""
    if not total.flags.c_contiguous:
        raise ValueError("add_scaled_rows needs a C-contiguous total (it writes through a view)")
    count = rows.shape[0]
    flat_rows, flat_total = rows.reshape(count, -1), total.reshape(-1)
    scale = weights.astype((1.0 * flat_rows[:1, :1]).dtype)[:, None]  # as numpy scales by a float
    width = max(1, CHUNK // max(count, 1))
    for start in range(0, flat_total.size, width):
        end = start + width
        products = (flat_rows[:, start:end] * scale).astype(np.float64, copy=False)
        products[0] += flat_total[start:end]
        if products.shape[1] > 1:
            np.add.reduce(products, axis=0, out=flat_total[start:end])
        else:
            flat_total[start:end] = np.add.accumulate(products[:, 0])[-1]


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

    def add_block(self, payload: Params, weights: npt.NDArray[np.float64]) -> None:
        """``add`` for each row of a stacked ``payload`` ((K, …) arrays) with its weight,
        in row order, to the same bits (``add_scaled_rows``)."""
        if list(payload) != list(self._buffers):
            raise ValueError(f"block payload names {list(payload)}, expected {list(self._buffers)}")
        for name, buffer in self._buffers.items():
            rows = payload[name]
            if rows.shape[1:] != buffer.shape:
                raise ValueError(
                    f"block payload[{name!r}] has rows of shape {rows.shape[1:]}, "
                    f"expected {buffer.shape}"
                )
            add_scaled_rows(buffer, rows, weights)
        for weight in weights.tolist():  # the same float sum as one add at a time
            self._weight += weight
        self._count += len(weights)

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
