"""What a client does to its update between training and the wire: clip ▸ DP noise
(local) ▸ compress ▸ mask / encrypt.

Noise comes before compression, on purpose (docs/architecture.md, "The dataflow"):
compression after the noise is post-processing of a private release, so the accountant's
ε holds whatever the codec does. Compressing first would need the codec's own sensitivity
bound, and dense noise would undo a sparse codec's savings anyway.

Every transport calls :func:`prepare_upload` on every update, so simulation and deployment
send the same thing.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import numpy.typing as npt

from fedstream.client.algorithms import split_extras
from fedstream.client.local import shared_part
from fedstream.client.state import EMPTY, ClientState
from fedstream.compression.codecs import (
    Compression,
    decode_broadcast,
    decode_update,
    encode_update,
)
from fedstream.compression.pruning import kept_mask
from fedstream.params import Params
from fedstream.privacy.dp import privatize_update
from fedstream.privacy.mechanisms import LOCAL_NOISE_STREAM, client_noise
from fedstream.types import METRIC_PREFIX, ClientMetrics, ClientUpdate, FitConfig


def receive_params(params: Params, config: FitConfig) -> Params:
    """The global params as the client trains from them, decoded from the broadcast."""
    return decode_broadcast(params, config.broadcast)


def upload_mask(received: Params, config: FitConfig) -> npt.NDArray[np.bool_] | None:
    """The pruning mask the update is encoded under: read from the shared part of the
    params the client trained from (the server reads it from the same broadcast)."""
    if not config.masked:
        return None
    model, _ = split_extras(received)
    return kept_mask(shared_part(model, config.local_entries))


def upload_codec(config: FitConfig) -> Compression | None:
    """The uplink codec: the configured one, or for a pruned model the plain one, which
    still sends only the kept entries."""
    if config.compression is not None:
        return config.compression
    return Compression() if config.masked else None


RESIDUAL = "residual"
"""The client-state entry that holds the compression error feedback."""


def prepare_upload(
    update: ClientUpdate,
    config: FitConfig,
    state: ClientState = EMPTY,
    mask: npt.NDArray[np.bool_] | None = None,
    noise_seed: int | None = None,
) -> tuple[ClientUpdate, ClientState]:
    """The update as it leaves the client, and the client's next state.

    Clipped and (for local DP) noised when ``config.privacy`` asks, then compressed when
    ``config.compression`` asks, with the error-feedback residual read from and written to
    ``state[RESIDUAL]``. Noise comes before compression, so the compression is
    post-processing of a private release. Under secure aggregation the client decodes its
    own compressed update again, since a masked or encrypted sum adds dense vectors.
    Under DP-SGD the weight is 1: the client's number of examples is as private as the
    examples. Local-DP noise comes from ``noise_seed``, the client's own (``FitTask.noise_seed``),
    or from the OS CSPRNG without one; never from the server's task seed.
    """
    if config.sample_dp is not None:  # the example count is private too
        update = replace(update, weight=1.0)
    update = metrics_for_wire(update, config.client_metrics)
    if config.privacy is not None:
        seed = None if config.privacy.secure_noise else noise_seed
        update = privatize_update(update, config.privacy, client_noise(seed, LOCAL_NOISE_STREAM))
    codec = upload_codec(config)
    if codec is None:
        return update, state
    bound = clip_bound(config)
    if bound is None:
        encoded, residual = encode_update(
            update.payload, codec, state.get(RESIDUAL), config.seed, mask
        )
    else:
        encoded, residual = encode_within(
            update.payload, codec, state.get(RESIDUAL), config.seed, mask, bound
        )
    if config.secure_aggregation:
        encoded = decode_update(encoded, update.payload, codec, config.seed, mask)
    if residual is not None:
        state = {**state, RESIDUAL: residual}
    return replace(update, payload=encoded), state


ENCODE_ATTEMPTS = 4


def clip_bound(config: FitConfig) -> float | None:
    """The L2 bound the decoded update must keep: the clip under central DP, whose
    accountant assumes every released update within it. (Local-DP noise comes before the
    codec, which is then post-processing, so it needs none.)"""
    privacy = config.privacy
    if privacy is None or privacy.noise_multiplier > 0:
        return None
    return privacy.clip


def encode_within(
    payload: Params,
    codec: Compression,
    residual: Params | None,
    seed: int,
    mask: npt.NDArray[np.bool_] | None,
    bound: float,
) -> tuple[Params, Params | None]:
    """``encode_update`` whose decoded result has L2 norm at most ``bound``.

    A quantiser can lengthen a clipped update (q4 to 1.03·C, qsgd:4 to 4·C), and error
    feedback adds the residual after clipping, so the update the server decodes is what
    must fit. The input (update and residual together) is scaled down by bound/‖decoded‖
    until it does. Every codec here is scale-equivariant (the same draws round the same
    way at any scale), so one step suffices up to the rounding of their float32 fields,
    which a margin growing tenfold per attempt covers; after
    ``ENCODE_ATTEMPTS`` the client sends a zero update, which fits any bound. What is
    scaled away is not fed back, as what clipping removes is not."""
    scale = 1.0
    for attempt in range(ENCODE_ATTEMPTS):
        scaled = payload if scale == 1.0 else payload * scale
        carried = residual if residual is None or scale == 1.0 else residual * scale
        encoded, left = encode_update(scaled, codec, carried, seed, mask)
        norm = decode_update(encoded, payload, codec, seed, mask).norm()
        if norm <= bound:
            return encoded, left
        scale *= bound / norm * (1 - 1e-6 * 10**attempt)  # a margin for float32 fields
    zero = payload.map(np.zeros_like)
    return encode_update(zero, codec, None, seed, mask)


def metrics_for_wire(update: ClientUpdate, how: ClientMetrics) -> ClientUpdate:
    """The update with its training metrics as ``how`` asks (``FitConfig.client_metrics``):
    unchanged, moved into ``extras`` as weight × value (so a secure sum shows the server
    only their total), or dropped."""
    if how == "clear" or not update.metrics:
        return update
    if how == "none":
        return replace(update, metrics={})
    summed = {f"{METRIC_PREFIX}{k}": update.weight * v for k, v in update.metrics.items()}
    return replace(update, metrics={}, extras={**update.extras, **summed})
