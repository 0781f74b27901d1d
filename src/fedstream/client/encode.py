"""What a client does to its update between training and the wire (DESIGN.md's
"encode: clip ▸ compress ▸ DP noise (local) ▸ mask / encrypt").

Every transport calls :func:`prepare_upload` on every update, so simulation and deployment
send the same thing.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fedstream.compression.codecs import decode_broadcast, decode_update, encode_update
from fedstream.params import Params
from fedstream.privacy.dp import privatize_update
from fedstream.privacy.mechanisms import NoiseSource, SecureGenerator
from fedstream.types import ClientUpdate, FitConfig

LOCAL_NOISE_STREAM = 0x4C4450  # separates local-DP noise from the client's shuffling stream


def receive_params(params: Params, config: FitConfig) -> Params:
    """The global params as the client trains from them, decoded from the broadcast."""
    return decode_broadcast(params, config.broadcast)


def prepare_upload(
    update: ClientUpdate, config: FitConfig, residual: Params | None = None
) -> tuple[ClientUpdate, Params | None]:
    """The update as it leaves the client, and the client's next compression residual.

    Clipped and (for local DP) noised when ``config.privacy`` asks, then compressed when
    ``config.compression`` asks. Noise comes before compression, so the compression is
    post-processing of a private release. Under secure aggregation the client decodes its
    own compressed update again, since a masked or encrypted sum adds dense vectors.
    """
    if config.privacy is not None:
        rng: NoiseSource = (
            SecureGenerator()
            if config.privacy.secure_noise
            else np.random.default_rng([config.seed, LOCAL_NOISE_STREAM])
        )
        update = privatize_update(update, config.privacy, rng)
    codec = config.compression
    if codec is None:
        return update, residual
    encoded, residual = encode_update(update.payload, codec, residual, config.seed)
    if config.secure_aggregation:
        encoded = decode_update(encoded, update.payload, codec, config.seed)
    return replace(update, payload=encoded), residual
