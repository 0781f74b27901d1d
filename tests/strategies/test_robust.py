"""Robust rules as strategies, on clients that are functions: one attacker, many honest."""

from dataclasses import replace

import numpy as np
import pytest

from fedstream import (
    ConfigError,
    FedAvg,
    FedAvgM,
    Params,
    RoundConfig,
    RoundFailedError,
    ServerState,
    run_round,
)
from fedstream.strategies.robust import Robust
from fedstream.types import WeightedSum
from tests.aggregation.test_robust_rules import matrix
from tests.rounds.scripted import CLIENTS, GLOBAL, transport
from tests.settings import make_config


def attacked():
    """c5 sends minus a million in every entry and claims a million examples."""
    return transport(c5=lambda u: replace(u, payload=u.payload * -1e6, weight=1e6))


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Robust(FedAvg(), "median"), 2.5),  # median of −6e6, 1, 2, 3, 4, 5
        (Robust(FedAvg(), "trimmed_mean", 1 / 6), 2.5),  # mean of 1, 2, 3, 4
        (Robust(FedAvg(), "multi_krum", byzantine=1), 3.0),  # the 5 honest, averaged
        # from the median 2.5, τ = the median distance (1.5 per entry): the clipped
        # differences −1.5, −0.5, 0.5, 1.5, 1.5 and the attacker's −1.5 cancel
        (Robust(FedAvg(), "centered_clipping"), 2.5),
        # M = the median norm (3.5 per entry): 1, 2, 3, 3.5, 3.5 and the attacker's −3.5
        (Robust(FedAvg(), "norm_bound"), 9.5 / 6),
    ],
)
def test_a_robust_rule_shrugs_off_one_attacker_that_owns_the_weighted_mean(strategy, expected):
    state = ServerState.initial(GLOBAL, seed=0)
    config = RoundConfig(clients_per_round=6, evaluate_fraction=0.0)
    robust, _ = run_round(state, strategy, attacked(), CLIENTS, config)
    np.testing.assert_allclose(robust.params["b"], GLOBAL["b"] + expected)
    plain, _ = run_round(state, FedAvg(), attacked(), CLIENTS, config)
    assert plain.params["b"][0] < -1e5  # the weighted mean is the attacker's


def test_a_robust_rule_composes_with_a_server_optimiser():
    state = ServerState.initial(GLOBAL, seed=0)
    config = RoundConfig(clients_per_round=6, evaluate_fraction=0.0)
    strategy = Robust(FedAvgM(server_lr=1.0, momentum=0.5), "median")
    for _ in range(2):
        state, _ = run_round(state, strategy, attacked(), CLIENTS, config)
    # momentum: m = 2.5, then 0.5·2.5 + 2.5 = 3.75; w moves by 2.5 + 3.75
    np.testing.assert_allclose(state.params["b"], GLOBAL["b"] + 6.25)
    np.testing.assert_allclose(state.optimizer["m"]["b"], [3.75])


def test_robust_rules_compose_with_client_side_dp_and_not_with_central_dp():
    with pytest.raises(
        ConfigError, match=r"strategy\.aggregator='median' is invalid: expected 'mean' with privacy"
    ):
        make_config(aggregator="median", dp="client")
    with pytest.raises(ConfigError, match="aggregator='median', which reads each client's update"):
        make_config(aggregator="median", secure_aggregation="secagg+")
    make_config(aggregator="trimmed_mean", dp="local")  # noise on the clients: composes
    with pytest.raises(ConfigError, match="aggregator='mode' is invalid"):
        make_config(aggregator="mode")


def test_krum_takes_one_of_the_three_most_central_honest_updates_whole():
    # f = 1 of 6: the 3 nearest neighbours of 2, 3 and 4 are equally near (a tie)
    state = ServerState.initial(GLOBAL, seed=0)
    config = RoundConfig(clients_per_round=6, evaluate_fraction=0.0)
    robust, _ = run_round(state, Robust(FedAvg(), "krum", byzantine=1), attacked(), CLIENTS, config)
    moved = (robust.params.flat() - GLOBAL.flat()).tolist()
    assert moved in ([2.0] * 3, [3.0] * 3, [4.0] * 3)


def test_the_geometric_median_lands_between_the_middle_two_honest_updates():
    state = ServerState.initial(GLOBAL, seed=0)
    config = RoundConfig(clients_per_round=6, evaluate_fraction=0.0)
    robust, _ = run_round(state, Robust(FedAvg(), "geometric_median"), attacked(), CLIENTS, config)
    assert 2.0 <= float(robust.params["b"][0] - GLOBAL["b"][0]) <= 3.0


def test_a_round_with_too_few_updates_for_the_rule_fails_and_changes_nothing():
    state = ServerState.initial(GLOBAL, seed=0)
    config = RoundConfig(clients_per_round=6, evaluate_fraction=0.0)
    with pytest.raises(RoundFailedError) as raised:
        run_round(state, Robust(FedAvg(), "bulyan", byzantine=1), attacked(), CLIENTS, config)
    assert str(raised.value).startswith(
        "round 1 failed: strategy.byzantine=1 is invalid: expected at most 0 for bulyan over 6 "
        "updates"
    )
    assert state.round == 0 and state.params.bit_equal(GLOBAL)  # nothing half-applied


def test_attacker_bounds_are_checked_when_the_run_is_configured():
    with pytest.raises(
        ConfigError, match=r"^strategy\.byzantine=2 is invalid: expected at most 1 for krum over 6"
    ):
        make_config(aggregator="krum", byzantine=2, clients_per_round=6, num_clients=20)
    make_config(aggregator="bulyan", byzantine=1, clients_per_round=8, num_clients=20)


def test_bucketing_before_the_median_keeps_the_attacker_out_and_is_reproducible():
    state = ServerState.initial(GLOBAL, seed=0)
    config = RoundConfig(clients_per_round=6, evaluate_fraction=0.0)
    strategy = Robust(FedAvg(), "median", bucket_size=2)
    first, _ = run_round(state, strategy, attacked(), CLIENTS, config)
    again, _ = run_round(state, strategy, attacked(), CLIENTS, config)
    moved = float(first.params["b"][0] - GLOBAL["b"][0])
    assert 1.5 <= moved <= 4.5  # the median of three bucket means: an honest pair's
    assert first.params.bit_equal(again.params)  # the shuffle comes from the server's state


def test_bucketing_counts_buckets_against_the_attacker_bound():
    with pytest.raises(ConfigError, match=r"expected at most 1 for krum over 5 updates"):
        make_config(
            aggregator="krum", byzantine=2, bucket_size=2, clients_per_round=10, num_clients=20
        )


def test_each_rule_reads_its_own_setting():
    # krum keeps one update whole (the one nearest its neighbours), multi-krum averages
    # the n − f nearest; an explicit radius or bound replaces the median default
    rows = [[0], [1], [2], [10], [11]]
    assert Robust(FedAvg(), "krum", byzantine=1).robust_delta(matrix(rows)).tolist() == [1.0]
    assert Robust(FedAvg(), "multi_krum", byzantine=1).robust_delta(matrix(rows)).tolist() == [3.25]
    far = matrix([[0], [0], [0], [10]])
    assert Robust(FedAvg(), "centered_clipping", radius=1.0).robust_delta(far).tolist() == [
        0.328125
    ]
    assert Robust(FedAvg(), "centered_clipping").robust_delta(far).tolist() == [0.0]
    norms = matrix([[3, 4], [0, 1], [6, 8]])
    np.testing.assert_allclose(
        Robust(FedAvg(), "norm_bound", bound=2.0).robust_delta(norms), [0.8, 1.4]
    )
    np.testing.assert_allclose(Robust(FedAvg(), "norm_bound").robust_delta(norms), [2.0, 3.0])


def test_buckets_of_two_are_drawn_from_the_servers_generator():
    # six updates, median 5 unbucketed; in buckets of two the median of three bucket
    # means depends on the pairing, which the server's seed fixes
    like = Params({"w": np.zeros(1, np.float32)})
    rows = matrix([[0], [1], [3], [7], [15], [31]])

    def stepped(seed, bucket_size):
        state = ServerState.initial(like, seed=seed).evolve(round=4)
        total = WeightedSum(like, weight=1.0, count=6, updates=rows)
        strategy = Robust(FedAvg(), "median", bucket_size=bucket_size)
        return float(strategy.server_update(state, total).params["w"][0])

    assert stepped(0, 1) == 5.0
    assert [stepped(seed, 2) for seed in (0, 1, 2)] == [9.0, 11.0, 7.5]
