"""FedDyn: the server step by hand, against FedAvg where clients drift, resume with every
client's gradient state, and what it composes with."""

import numpy as np
import pytest

import fedstream
from fedstream import ConfigError, Params, ServerState
from fedstream.strategies import FedDyn
from fedstream.types import WeightedSum
from tests.runs import (
    assert_secure_sum_matches_plain,
    resumed_and_straight,
    vectorised_and_sequential,
)
from tests.settings import make_config, nested

MODEL = Params({"w": np.array([1.0, 2.0])})


def test_the_server_step_by_hand():
    # α = 0.1, two of ten clients, mean Δ = (0.2, −0.2): h = 0 − 0.1·(2/10)·Δ =
    # (−0.004, 0.004), and x = (1, 2) + Δ − h/α = (1.24, 1.76)
    state = ServerState.initial(MODEL, seed=0)
    aggregate = WeightedSum(Params({"w": np.array([0.4, -0.4])}), 2.0, 2, population=10)
    new = FedDyn(alpha=0.1).server_update(state, aggregate)
    np.testing.assert_allclose(new.optimizer["h"]["w"], [-0.004, 0.004], rtol=1e-12)
    np.testing.assert_allclose(new.params["w"], [1.24, 1.76], rtol=1e-12)
    # the next round subtracts the whole h/α again: a zero mean still moves x by −h/α
    again = FedDyn(alpha=0.1).server_update(new, WeightedSum(MODEL * 0, 1.0, 1, population=10))
    np.testing.assert_allclose(again.params["w"], [1.28, 1.72], rtol=1e-12)
    assert FedDyn().server_update(state, WeightedSum(MODEL * 0, 0.0, 0)) is state
    with pytest.raises(ConfigError, match=r"^alpha=0 is invalid"):
        FedDyn(alpha=0)


def test_feddyn_beats_fedavg_where_label_skew_makes_clients_drift():
    # SCAFFOLD's test setting: digits over 100 clients at Dirichlet 0.1, 5 local epochs
    skewed = {"rounds": 30, "alpha": 0.1, "local_epochs": 5, "lr": 0.05}
    feddyn = fedstream.simulate(
        **nested({"strategy": {"name": "feddyn", "alpha": 0.01}}, **skewed)
    ).final_metrics["central_accuracy"]
    assert feddyn == pytest.approx(0.8552, abs=1e-4)  # FedAvg 0.5933, SCAFFOLD 0.8468


def test_feddyn_resumes_bit_for_bit_with_every_clients_gradient(tmp_path):
    run = {"strategy": "feddyn", "rounds": 4, "alpha": 0.1, "clients_per_round": 10}
    resumed, straight = resumed_and_straight(tmp_path, run)
    assert resumed.state.params.bit_equal(straight.state.params)
    assert resumed.state.optimizer["h"].bit_equal(straight.state.optimizer["h"])


def test_feddyn_composes_with_secure_sums_dp_and_the_vectorised_trainer():
    run = {"strategy": "feddyn", "rounds": 2, "evaluate_every": 0, "alpha": 0.1}
    assert_secure_sum_matches_plain(run)
    vectorised_and_sequential(run)
    private = fedstream.simulate(**nested(dp="client", dp_noise=0.5, dp_clip=1.0, **run))
    assert private.final_metrics["dp_epsilon"] > 0
    with pytest.raises(
        ConfigError, match=r"privacy\.level='sample' is invalid: expected .* with FedDyn \(its"
    ):
        make_config(strategy="feddyn", dp="sample")
