"""What a client does to its update between training and the wire (DESIGN.md's
"encode: clip ▸ compress ▸ DP noise (local) ▸ mask / encrypt").

Every transport calls :func:`prepare_upload` on every update, so simulation and deployment
send the same thing.
"""

from __future__ import annotations

import numpy as np

from fedstream.privacy.dp import privatize_update
from fedstream.privacy.mechanisms import NoiseSource, SecureGenerator
from fedstream.types import ClientUpdate, FitConfig

LOCAL_NOISE_STREAM = 0x4C4450  # separates local-DP noise from the client's shuffling stream


def prepare_upload(update: ClientUpdate, config: FitConfig) -> ClientUpdate:
    """The update as it leaves the client: clipped and (for local DP) noised when
    ``config.privacy`` asks for it, otherwise unchanged."""
    if config.privacy is None:
        return update
    rng: NoiseSource = (
        SecureGenerator()
        if config.privacy.secure_noise
        else np.random.default_rng([config.seed, LOCAL_NOISE_STREAM])
    )
    return privatize_update(update, config.privacy, rng)
