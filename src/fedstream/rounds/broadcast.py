"""Phase 2, broadcast: the global params as the clients receive them."""

from __future__ import annotations

import numpy as np

from fedstream.compression.codecs import encode_broadcast
from fedstream.params import Params


def broadcast_params(params: Params, codec: str, rng: np.random.Generator) -> Params:
    """``params`` encoded with the broadcast ``codec`` (``"none"``, ``"f16"``, ``"q8"``).
    A lossy codec draws one seed from ``rng`` for its stochastic rounding; ``"none"`` draws
    nothing and sends the params themselves."""
    if codec == "none":
        return params
    return encode_broadcast(params, codec, int(rng.integers(2**63 - 1)))
