from dataclasses import replace

import numpy as np
import pytest

from fedstream import ClientUpdate, FedAvg, RoundConfig, RoundFailedError, SecAggConfig
from fedstream.errors import ClientFailure, ConfigError
from fedstream.rounds import Collected, aggregate_updates, aggregation_for
from fedstream.rounds.aggregate import (
    IndividualUpdates,
    SecureRound,
    StreamingSum,
    check_composable,
)
from tests.rounds.scripted import GLOBAL, delta_of, transport, weight_of


class Median(FedAvg):
    needs_individual_updates = True


def test_the_streaming_sum_is_the_weighted_sum_in_float64():
    sum_ = aggregation_for(RoundConfig(), GLOBAL, FedAvg(), 2)
    assert isinstance(sum_, StreamingSum) and not sum_.on_clients
    for client in ("c0", "c2"):
        sum_.add(ClientUpdate(client, 1, delta_of(client), weight_of(client), extras={"u": 1.0}))
    result = sum_.finish(transport(), 1, ["c0", "c2"], np.random.default_rng(0))
    # 1·1 + 3·3 = 10 in every entry, over weight 4
    np.testing.assert_array_equal(result.aggregate.total.flat(), [10.0, 10.0, 10.0])
    assert result.aggregate.weight == 4.0 and result.aggregate.count == 2
    assert result.aggregate.extras == {"u": 2.0}
    assert result.included == ("c0", "c2")


def test_a_secure_sum_keeps_updates_on_the_clients_and_needs_two():
    aggregation = aggregation_for(
        RoundConfig(secure_aggregation=SecAggConfig()), GLOBAL, FedAvg(), 2
    )
    assert isinstance(aggregation, SecureRound)
    assert aggregation.on_clients and aggregation.min_participants == 2


def test_too_few_valid_updates_fail_the_round_naming_each_failure():
    failure = ClientFailure("c1", "train", "disk full")
    collected = Collected(("c0",), (failure,))
    with pytest.raises(RoundFailedError) as raised:
        aggregate_updates(
            aggregation_for(RoundConfig(min_clients=2), GLOBAL, FedAvg(), 2),
            transport(),
            collected,
            RoundConfig(min_clients=2),
            sampled=2,
            round_number=3,
            rng=np.random.default_rng(0),
        )
    assert str(raised.value) == (
        "round 3 failed: 1 of 2 sampled clients gave a valid update, min_clients=2\n"
        "  - client 'c1' (train): disk full"
    )
    assert raised.value.failures == (failure,)


def test_a_strategy_that_needs_each_update_cannot_run_under_a_secure_sum():
    with pytest.raises(ConfigError, match="secure_aggregation='secagg\\+' is invalid"):
        check_composable(Median(), RoundConfig(secure_aggregation=SecAggConfig()))


def test_individual_updates_keep_every_row_beside_the_sum():
    aggregation = aggregation_for(RoundConfig(), GLOBAL, Median(), 3)
    assert isinstance(aggregation, IndividualUpdates) and not aggregation.on_clients
    for client in ("c2", "c0"):
        aggregation.add(ClientUpdate(client, 1, delta_of(client), weight_of(client)))
    result = aggregation.finish(transport(), 1, ["c2", "c0"], np.random.default_rng(0))
    # 3·3 + 1·1 = 10 in every entry, over weight 4; the rows are each client's payload
    np.testing.assert_array_equal(result.aggregate.total.flat(), [10.0, 10.0, 10.0])
    assert result.aggregate.weight == 4.0 and result.included == ("c2", "c0")
    matrix = result.aggregate.updates
    assert matrix is not None and matrix.client_ids == ("c2", "c0")
    np.testing.assert_array_equal(matrix.rows, [[3.0, 3.0, 3.0], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(matrix.weights, [3.0, 1.0])
    assert matrix.like.spec == GLOBAL.spec


def test_a_secure_round_runs_its_protocol_over_the_transport():
    # scripted clients have no secure-sum stages, so the protocol itself names each one
    aggregation = aggregation_for(
        RoundConfig(secure_aggregation=SecAggConfig()), GLOBAL, FedAvg(), 2
    )
    with pytest.raises(RoundFailedError) as raised:
        aggregation.finish(transport(), 3, ["c0", "c1"], np.random.default_rng(0))
    assert str(raised.value) == (
        "round 3 failed: no client completed secure aggregation\n"
        "  - client 'c0' (advertise): a scripted client has no stages\n"
        "  - client 'c1' (advertise): a scripted client has no stages"
    )


def test_composability_is_refused_only_for_both_together():
    check_composable(Median(), RoundConfig())
    check_composable(FedAvg(), RoundConfig(secure_aggregation=SecAggConfig()))
    with pytest.raises(
        ConfigError,
        match=r"^secure_aggregation='secagg\+' is invalid: expected a sum-based strategy; "
        r"fedavg needs each client's update, which secure aggregation hides$",
    ):
        check_composable(Median(), RoundConfig(secure_aggregation=SecAggConfig()))


def aggregate_of(clients, config, strategy=None):
    aggregation = aggregation_for(config, GLOBAL, strategy or FedAvg(), len(clients))
    if not aggregation.on_clients:
        for client in clients:
            aggregation.add(ClientUpdate(client, 1, delta_of(client), weight_of(client)))
    return aggregate_updates(
        aggregation, transport(), Collected(tuple(clients), ()), config, sampled=4,
        round_number=3, rng=np.random.default_rng(0),
    )  # fmt: skip


def test_exactly_min_clients_is_enough():
    done = aggregate_of(["c0", "c1"], RoundConfig(min_clients=2))
    assert done.aggregate.weight == 3.0 and done.collected.completed == ("c0", "c1")
    np.testing.assert_array_equal(done.aggregate.total.flat(), [5.0, 5.0, 5.0])


def test_a_secure_sum_of_one_says_it_needs_two():
    with pytest.raises(RoundFailedError) as raised:
        aggregate_of(["c0"], RoundConfig(secure_aggregation=SecAggConfig()))
    assert str(raised.value) == (
        "round 3 failed: 1 of 4 sampled clients gave a valid update, min_clients=1 "
        "(secure aggregation needs at least 2)"
    )


def test_an_empty_sum_names_its_round():
    for strategy in (FedAvg(), Median()):
        aggregation = aggregation_for(RoundConfig(), GLOBAL, strategy, 2)
        with pytest.raises(RoundFailedError, match=r"^round 3 failed: no client update"):
            aggregation.finish(transport(), 3, [], np.random.default_rng(0))


class DropsOneInProtocol(StreamingSum):
    """A protocol that, like a secure sum whose client drops between its stages, finishes
    with one participant fewer than it started with."""

    def finish(self, transport, round_number, participants, rng):
        done = super().finish(transport, round_number, participants[:-1], rng)
        lost = ClientFailure(participants[-1], "unmask", "dropped during the protocol")
        return replace(done, failures=(lost,))


def test_a_protocol_that_ends_below_min_clients_fails_the_round():
    aggregation = DropsOneInProtocol(GLOBAL)
    for client in ("c0", "c1"):
        aggregation.add(ClientUpdate(client, 1, delta_of(client), weight_of(client)))
    with pytest.raises(RoundFailedError) as raised:
        aggregate_updates(
            aggregation, transport(), Collected(("c0", "c1"), ()), RoundConfig(min_clients=2),
            sampled=2, round_number=5, rng=np.random.default_rng(0),
        )  # fmt: skip
    assert str(raised.value) == (
        "round 5 failed: 1 of 2 sampled clients gave a valid update, min_clients=2\n"
        "  - client 'c1' (unmask): dropped during the protocol"
    )
