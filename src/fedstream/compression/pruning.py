"""Magnitude pruning of the global model, and the mask that clients and codecs respect.

Only weight tensors (two or more dimensions) are pruned; biases and other vectors are left
whole. A pruned entry is exactly zero in the global params, so the mask travels with the
model itself: a client reads it from the params it receives, the server from the params it
sent. Clients keep pruned weights at zero while they train, and their updates carry only
the kept entries.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fedstream import checks
from fedstream.params import Params


def prunable(array: npt.NDArray[np.generic]) -> bool:
    return array.ndim >= 2


def prune(params: Params, fraction: float, structured: bool = False) -> Params:
    """Zero the ``fraction`` of each weight tensor smallest in magnitude: single entries
    (unstructured), or whole output units, the rows along the first axis with the smallest
    L2 norm (structured; for a conv kernel, whole filters)."""
    checks.in_unit_interval("prune_fraction", fraction, include_zero=True, include_one=False)
    out = {}
    for name, array in params.items():
        if not prunable(array) or fraction == 0:
            out[name] = array
            continue
        if structured:
            norms = np.sqrt((array.reshape(array.shape[0], -1).astype(np.float64) ** 2).sum(1))
            count = math.floor(fraction * norms.size)
            rows = np.argsort(norms, kind="stable")[:count]
            pruned = array.copy()
            pruned[rows] = 0
        else:
            flat = array.ravel()
            count = math.floor(fraction * flat.size)
            entries = np.argsort(np.abs(flat), kind="stable")[:count]
            pruned_flat = flat.copy()
            pruned_flat[entries] = 0
            pruned = pruned_flat.reshape(array.shape)
        out[name] = pruned
    return Params(out)


def kept_mask(params: Params) -> npt.NDArray[np.bool_]:
    """Flat mask over ``params.flat()``: False where a weight tensor holds a pruned zero."""
    return np.concatenate(
        [(a != 0).ravel() if prunable(a) else np.ones(a.size, dtype=bool) for a in params.values()]
    )
