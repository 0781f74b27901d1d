"""What leaves the client (``client.encode``): the update the server decodes keeps the DP
clip bound whatever the codec, with or without a secure sum and error feedback."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedstream import ClientUpdate, FitConfig, Params
from fedstream.client.encode import RESIDUAL, prepare_upload
from fedstream.compression.codecs import Compression, decode_update
from fedstream.rounds import check_update
from fedstream.types import ClientPrivacy

CODECS = ["q8", "q4", "qsgd:16", "qsgd:4", "topk:0.1+q8", "randk:0.2+qsgd:4", "topk:0.05"]


@pytest.mark.parametrize("spec", CODECS)
@pytest.mark.parametrize("secure", [False, True])
def test_a_quantised_update_under_central_dp_keeps_the_clip_bound(spec, secure):
    rng = np.random.default_rng(3)
    like = Params({"w": np.zeros((40, 25)), "b": np.zeros(25)})
    codec = Compression.parse(spec)
    privacy = ClientPrivacy(clip=1.0, noise_multiplier=0.0)
    state: dict[str, Params] = {}
    worst = 0.0
    for seed in range(6):  # error feedback carries each round's residual into the next
        raw = like.map(lambda a: rng.standard_t(2, size=a.shape) * 5)
        config = FitConfig(seed=seed, privacy=privacy, compression=codec, secure_aggregation=secure)
        sent, state = prepare_upload(ClientUpdate("c", 1, raw, 30.0), config, state)
        decoded = sent.payload if secure else decode_update(sent.payload, like, codec, seed)
        worst = max(worst, decoded.norm())
        if not secure:  # the server can check, and now accepts every update
            assert check_update(replace(sent, payload=decoded), like, 1, None, config) is None
        assert decoded.norm() > 0.5  # the bound is kept by scaling, not by sending nothing
    assert worst <= 1.0
    assert (RESIDUAL in state) == codec.keeps_residual
