"""Micro-batching (serving/batcher.py): concurrent requests share forward passes of at most
max_batch rows, and each gets exactly its own rows' outputs."""

import asyncio

import numpy as np
import torch

from fedstream.serving.batcher import MicroBatcher
from fedstream.serving.registry import LoadedModel
from fedstream.serving.stats import Stats


def model() -> LoadedModel:
    torch.manual_seed(0)
    module = torch.nn.Linear(4, 3).eval()
    return LoadedModel(7, module, {"in_features": 4, "dtype": "float32"}, {})


def test_concurrent_requests_are_joined_into_batches_of_at_most_max_batch_rows():
    served = model()
    stats = Stats()
    batcher = MicroBatcher(lambda: served, stats, max_batch=8, max_wait_s=0.05)
    rng = np.random.default_rng(1)
    requests = [rng.random((1 + i % 3, 4)).astype(np.float32) for i in range(20)]  # 40 rows

    async def all_at_once():
        return await asyncio.gather(*(batcher.predict(x) for x in requests))

    answers = asyncio.run(all_at_once())
    batcher.stop()
    for x, (version, outputs) in zip(requests, answers, strict=True):
        assert version == 7
        with torch.no_grad():
            expected = served.module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(outputs, expected, rtol=1e-6)  # its own rows, in order
    rows = sum(x.shape[0] for x in requests)
    assert stats.batched_rows == rows
    # 40 rows in passes of at most 8 (a batch closes once it reaches 8): at least 5
    # passes, and far fewer than the 20 requests
    assert 5 <= stats.batches <= 10, stats.batches


def test_without_a_model_every_waiting_request_gets_the_error():
    stats = Stats()
    batcher = MicroBatcher(lambda: None, stats, max_batch=8, max_wait_s=0.01)

    async def ask():
        return await asyncio.gather(
            *(batcher.predict(np.zeros((1, 4), np.float32)) for _ in range(3)),
            return_exceptions=True,
        )

    outcomes = asyncio.run(ask())
    batcher.stop()
    assert all(isinstance(o, RuntimeError) and "no model" in str(o) for o in outcomes)
    assert stats.batches == 0
