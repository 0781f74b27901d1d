"""The in-process transport's stacked cohorts: a cohort whose clients send their updates
as trained reaches the server as one block, and every run ends where one delivery per
client ends, to the bit."""

from dataclasses import replace

import numpy as np
import pytest

from fedstream import FedAvg, InProcessTransport, RoundConfig, ServerState, run_round
from fedstream.client.base import FitTask
from fedstream.client.vectorized import VectorizedTrainer
from fedstream.compression import Compression
from fedstream.simulation import build
from fedstream.strategies.robust import Robust
from fedstream.transport.base import Delivery, StackedDelivery, TransportWrapper
from fedstream.types import ClientPrivacy, FitConfig
from tests.settings import make_config


@pytest.fixture(scope="module")
def made():
    return build(make_config(num_clients=12, clients_per_round=6, trainer="vectorized", rounds=3))


def transport_of(made):
    assert isinstance(made.trainer, VectorizedTrainer)
    return InProcessTransport(made.dataset.clients, made.trainer, cohort_size=4)


def tasks(made, config, count=6):
    names = sorted(made.dataset.clients)[:count]
    return [FitTask(name, 1, config.with_seed(100 + k)) for k, name in enumerate(names)]


def test_a_plain_cohort_comes_as_blocks_that_split_into_what_fit_delivers(made):
    transport = transport_of(made)
    asked = tasks(made, FitConfig(local_epochs=1, batch_size=5, lr=0.1))
    stacked = list(transport.fit_stacked(made.initial.params, asked))
    assert stacked and all(isinstance(d, StackedDelivery) for d in stacked)
    assert sum(len(d.block) for d in stacked) == len(asked)  # two cohorts of at most 4
    rows = [one for d in stacked for one in d.split()]
    alone = list(transport.fit(made.initial.params, asked))
    assert all(isinstance(d, Delivery) for d in alone)
    assert sorted(d.client_id for d in rows) == sorted(d.client_id for d in alone)
    by_client = {d.client_id: d for d in alone}
    for one in rows:
        other = by_client[one.client_id]
        assert (one.bytes_down, one.bytes_up) == (other.bytes_down, other.bytes_up)
        a, b = one.result, other.result
        assert (a.round, a.weight, a.metrics, a.extras) == (b.round, b.weight, b.metrics, b.extras)
        assert a.payload.bit_equal(b.payload)
        assert all(not array.flags.writeable for array in a.payload.values())


@pytest.mark.parametrize(
    "setting",
    [
        {"compression": Compression.parse("topk:0.5")},
        {"privacy": ClientPrivacy(clip=1.0, noise_multiplier=0.0)},
        {"secure_aggregation": True},
        {"client_metrics": "summed"},
        {"local_entries": ("0.bias",)},
        {"algorithm": "fednova"},
    ],
)
def test_a_cohort_whose_clients_change_their_update_before_sending_comes_one_by_one(made, setting):
    transport = transport_of(made)
    asked = tasks(made, replace(FitConfig(local_epochs=1, batch_size=5, lr=0.1), **setting))
    deliveries = list(transport.fit_stacked(made.initial.params, asked))
    assert len(deliveries) == len(asked)
    assert not any(isinstance(d, StackedDelivery) for d in deliveries)


@pytest.mark.parametrize(
    ("strategy", "config"),
    [
        (FedAvg(), RoundConfig(clients_per_round=7, batch_size=4, lr=0.2)),
        (FedAvg(), RoundConfig(clients_per_round=7, max_client_weight=100.0)),
        (Robust(FedAvg(), rule="trimmed_mean"), RoundConfig(clients_per_round=7)),
        (FedAvg(), RoundConfig(clients_per_round=7, outlier_factor=5.0)),
    ],
)
def test_rounds_over_blocks_end_where_one_delivery_per_client_ends(made, strategy, config):
    # the wrapper hides fit_stacked, so the same clients answer one delivery each
    ends = []
    for transport in (transport_of(made), TransportWrapper(transport_of(made))):
        state = ServerState.initial(made.initial.params, seed=5)
        reports = []
        for _ in range(3):
            state, report = run_round(
                state, strategy, transport, sorted(made.dataset.clients), config, evaluate=False
            )
            reports.append(report)
        ends.append((state, reports))
    (stacked, stacked_reports), (alone, alone_reports) = ends
    assert stacked.params.bit_equal(alone.params)
    for a, b in zip(stacked_reports, alone_reports, strict=True):
        assert (a.completed, a.failures, a.bytes_down, a.bytes_up) == (
            b.completed, b.failures, b.bytes_down, b.bytes_up,
        )  # fmt: skip
        assert a.metrics == b.metrics
    if config.max_client_weight == 100.0:  # some clients hold more: refused from the block
        assert any(
            "exceeds max_client_weight=100" in f.cause for r in stacked_reports for f in r.failures
        )


def test_clipping_is_not_lost_to_stacking(made):
    # client-level DP clips on the client: its cohort must not skip that on the way out
    transport = transport_of(made)
    fit = FitConfig(local_epochs=1, batch_size=5, lr=0.5, privacy=ClientPrivacy(clip=0.01))
    deliveries = list(transport.fit_stacked(made.initial.params, tasks(made, fit)))
    assert len(deliveries) == 6
    for delivery in deliveries:
        assert isinstance(delivery, Delivery)
        assert delivery.result.payload.norm() <= 0.01 * (1 + 1e-6)
        assert delivery.result.weight == 1.0


def test_a_subclass_that_watches_fit_sees_every_answer(made):
    class Watching(InProcessTransport):
        def fit(self, params, tasks):
            for delivery in super().fit(params, tasks):
                seen.append(delivery.client_id)
                yield delivery

    seen: list[str] = []
    transport = Watching(made.dataset.clients, made.trainer, cohort_size=4)
    config = RoundConfig(clients_per_round=7)
    state = ServerState.initial(made.initial.params, seed=5)
    _, report = run_round(state, FedAvg(), transport, sorted(made.dataset.clients), config)
    assert len(report.completed) == 7 and sorted(seen) == sorted(report.completed)


def test_every_clients_update_is_the_same_however_the_round_is_cut(made):
    # to float rounding: a step whose batched matmul holds a single client may take
    # another kernel path than one holding several
    asked = tasks(made, FitConfig(local_epochs=2, batch_size=5, lr=0.1), count=9)
    updates = []
    for size in (2, 5, 1024):  # cut by size into cohorts of 2 or 5, or one in task order
        transport = InProcessTransport(made.dataset.clients, made.trainer, cohort_size=size)
        deliveries = transport.fit_stacked(made.initial.params, asked)
        updates.append({one.client_id: one.result for d in deliveries for one in d.split()})
    first = updates[0]
    for other in updates[1:]:
        assert sorted(other) == sorted(first)
        for client, update in first.items():
            assert other[client].weight == update.weight
            np.testing.assert_allclose(
                other[client].payload.flat(), update.payload.flat(), atol=1e-6
            )
