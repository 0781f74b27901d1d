"""The round's individual updates, for strategies that must see each one (robust rules).

The streaming sum keeps one model-sized buffer whatever the number of clients; a robust
rule needs every update. :class:`UpdateBuffer` keeps them as the rows of one matrix
(clients × parameters, in the payload's dtype), in memory up to ``budget_bytes`` and in a
memory-mapped temporary file beyond, so a round of many clients of a large model does not
need that much RAM. Robust rules read it column block by column block
(:meth:`UpdateMatrix.column_blocks`), so their working memory stays bounded too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedstream.errors import RoundFailedError
from fedstream.params import Params

DEFAULT_BUDGET_BYTES = 256 * 2**20
BLOCK_BYTES = 8 * 2**20  # a column block of the matrix, as robust rules read it


@dataclass(frozen=True)
class UpdateMatrix:
    """Accepted updates of one round: row k is client ``client_ids[k]``'s flat payload,
    declared weight ``weights[k]``; ``like`` gives the layout of a row."""

    client_ids: tuple[str, ...]
    weights: npt.NDArray[np.float64]
    rows: npt.NDArray[Any]
    like: Params

    @property
    def count(self) -> int:
        return len(self.client_ids)

    def column_blocks(
        self, block_bytes: int = BLOCK_BYTES
    ) -> Iterator[tuple[slice, npt.NDArray[np.float64]]]:
        """(columns, float64 copy of ``rows[:, columns]``) in blocks of about
        ``block_bytes``, so a rule never holds more than one block in float64."""
        width = self.rows.shape[1]
        step = max(1, block_bytes // (8 * max(1, self.count)))
        for start in range(0, width, step):
            columns = slice(start, min(start + step, width))
            yield columns, np.asarray(self.rows[:, columns], dtype=np.float64)

    def unflatten(self, vector: npt.NDArray[np.float64]) -> Params:
        """A flat result (one value per parameter) shaped and typed like a payload."""
        return Params.from_flat(vector, self.like)

    @property
    def in_memory(self) -> bool:
        return not isinstance(self.rows, np.memmap)


class UpdateBuffer:
    """Collects up to ``capacity`` updates shaped like ``like`` (see the module docstring)."""

    def __init__(self, like: Params, capacity: int, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        self._like = like
        dtype = np.dtype(np.result_type(*(a.dtype for a in like.values())) if len(like) else "f4")
        shape = (max(capacity, 1), like.num_elements)
        if shape[0] * shape[1] * dtype.itemsize <= budget_bytes:
            self._rows: npt.NDArray[Any] = np.empty(shape, dtype)
        else:
            # the mapping keeps the (already unlinked) file alive once it is closed here
            with tempfile.TemporaryFile(prefix="fedstream-updates-") as spill:
                self._rows = np.memmap(spill, dtype=dtype, mode="w+", shape=shape)
        self._ids: list[str] = []
        self._weights: list[float] = []

    def add(self, client_id: str, payload: Params, weight: float) -> None:
        """Append one accepted update (its layout must match ``like``)."""
        self._like.check_compatible(payload, "update payload", check_dtype=False)
        row = len(self._ids)
        if row >= self._rows.shape[0]:
            raise RoundFailedError(0, f"more updates than the {self._rows.shape[0]} planned")
        offset = 0
        for array in payload.values():
            self._rows[row, offset : offset + array.size] = array.reshape(-1)
            offset += array.size
        self._ids.append(client_id)
        self._weights.append(weight)

    def matrix(self) -> UpdateMatrix:
        """The updates added so far."""
        count = len(self._ids)
        return UpdateMatrix(
            tuple(self._ids), np.array(self._weights, np.float64), self._rows[:count], self._like
        )
