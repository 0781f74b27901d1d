"""SCAFFOLD: the server step by hand, and against FedAvg where clients drift."""

import numpy as np
import pytest

import fedstream
from fedstream import ConfigError, Params, ServerState
from fedstream.client.algorithms import CONTROL, join_extras, split_extras
from fedstream.strategies import Scaffold
from fedstream.types import WeightedSum
from tests.runs import assert_secure_sum_matches_plain, resumed_and_straight
from tests.settings import make_config, nested

MODEL = Params({"w": np.array([1.0, 2.0])})


def test_the_server_step_by_hand():
    # two of ten clients, mean Δy = (0.2, −0.2), mean Δc = (1, 3): c moves by 2/10 of it
    state = ServerState.initial(MODEL, seed=0)
    total = join_extras(
        Params({"w": np.array([0.4, -0.4])}), {CONTROL: Params({"w": np.array([2.0, 6.0])})}
    )
    aggregate = WeightedSum(total, weight=2.0, count=2, population=10)
    new = Scaffold(server_lr=0.5).server_update(state, aggregate)
    np.testing.assert_allclose(new.params["w"], [1.1, 1.9])
    np.testing.assert_allclose(new.optimizer["c"]["w"], [0.2, 0.6])
    # the next broadcast carries c beside the model
    model, extras = split_extras(Scaffold().broadcast(new))
    assert model.bit_equal(new.params) and extras[CONTROL].bit_equal(new.optimizer["c"])


def test_scaffold_beats_fedavg_where_label_skew_makes_clients_drift():
    # digits over 100 clients at Dirichlet 0.1, 5 local epochs: FedAvg drifts (about 0.59
    # after 30 rounds), SCAFFOLD's correction does not (about 0.85)
    skewed = {"rounds": 30, "alpha": 0.1, "local_epochs": 5, "lr": 0.05}
    fedavg = fedstream.simulate(**nested(strategy="fedavg", **skewed)).final_metrics[
        "central_accuracy"
    ]
    scaffold = fedstream.simulate(**nested(strategy="scaffold", **skewed)).final_metrics[
        "central_accuracy"
    ]
    assert fedavg == pytest.approx(0.5933, abs=1e-4)
    assert scaffold == pytest.approx(0.8468, abs=1e-4)


def test_scaffold_resumes_bit_for_bit_with_every_clients_variate(tmp_path):
    run = {"strategy": "scaffold", "rounds": 4, "alpha": 0.1, "clients_per_round": 10}
    resumed, straight = resumed_and_straight(tmp_path, run)
    assert resumed.state.params.bit_equal(straight.state.params)
    assert resumed.state.optimizer["c"].bit_equal(straight.state.optimizer["c"])


def test_scaffold_composes_with_secure_sums_and_refuses_what_it_cannot_do():
    assert_secure_sum_matches_plain({"strategy": "scaffold", "rounds": 2})
    with pytest.raises(
        ConfigError, match=r"privacy\.level='sample' is invalid: expected 'none', 'client'"
    ):
        make_config(strategy="scaffold", dp="sample")
    with pytest.raises(
        ConfigError, match=r"compression\.prune_fraction=0\.3 is invalid: expected 0 with"
    ):
        make_config(strategy="scaffold", prune_fraction=0.3)
