"""Robust rules as strategies, on clients that are functions: one attacker, many honest."""

from dataclasses import replace

import numpy as np
import pytest

from fedstream import ConfigError, FedAvg, FedAvgM, RoundConfig, ServerState, run_round
from fedstream.strategies.robust import Robust
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
