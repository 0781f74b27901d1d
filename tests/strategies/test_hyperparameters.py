"""Each strategy's hyperparameters: the bounds they are checked against (with the edges
that are allowed), the help text the run configuration shows, and the errors a strategy
raises when a round hands it less than it needs."""

from dataclasses import fields

import numpy as np
import pytest

from fedstream import (
    ConfigError,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedSGD,
    FedYogi,
    Params,
    RoundFailedError,
    ServerState,
)
from fedstream.client.algorithms import NOVA_STEPS
from fedstream.strategies import FedDyn, FedNova, Scaffold
from fedstream.strategies.robust import Robust
from fedstream.types import FitConfig, WeightedSum

MODEL = Params({"w": np.array([1.0, 2.0])})

POSITIVE = "expected a finite number > 0$"
UNIT_OPEN_ONE = r"expected a number in \[0, 1\)$"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FedSGD(server_lr=0.0), "^server_lr=0.0 is invalid: " + POSITIVE),
        (lambda: FedAvgM(server_lr=-1.0), "^server_lr=-1.0 is invalid: " + POSITIVE),
        (lambda: FedAvgM(momentum=1.0), "^momentum=1.0 is invalid: " + UNIT_OPEN_ONE),
        (lambda: FedAdam(server_lr=0.0), "^server_lr=0.0 is invalid: " + POSITIVE),
        (lambda: FedAdam(beta1=1.0), "^beta1=1.0 is invalid: " + UNIT_OPEN_ONE),
        (lambda: FedAdam(beta1=-0.1), "^beta1=-0.1 is invalid: " + UNIT_OPEN_ONE),
        (lambda: FedYogi(beta2=1.0), "^beta2=1.0 is invalid: " + UNIT_OPEN_ONE),
        (lambda: FedAdagrad(beta2=-0.5), "^beta2=-0.5 is invalid: " + UNIT_OPEN_ONE),
        (lambda: Scaffold(server_lr=0.0), "^server_lr=0.0 is invalid: " + POSITIVE),
        (lambda: Robust(FedAvg(), "mean"), "^aggregator='mean' is invalid: expected one of"),
        (
            lambda: Robust(FedAvg(), "trimmed_mean", 1.0),
            "^trim_fraction=1.0 is invalid: " + UNIT_OPEN_ONE,
        ),
        (
            lambda: Robust(FedAvg(), "trimmed_mean", -0.1),
            "^trim_fraction=-0.1 is invalid: " + UNIT_OPEN_ONE,
        ),
        (lambda: Robust(FedAvg(), byzantine=-1), "^byzantine=-1 is invalid: expected an int"),
        (lambda: Robust(FedAvg(), bucket_size=0), "^bucket_size=0 is invalid: expected an int"),
        (lambda: Robust(FedAvg(), radius=0.0), "^radius=0.0 is invalid: " + POSITIVE),
        (lambda: Robust(FedAvg(), bound=-2.0), "^bound=-2.0 is invalid: " + POSITIVE),
        (lambda: FedNova(server_lr=0.0), "^server_lr=0.0 is invalid: " + POSITIVE),
        (lambda: FedNova(mu=-1.0), "^mu=-1.0 is invalid: expected a finite number >= 0$"),
    ],
)
def test_out_of_range_hyperparameters_name_field_value_and_range(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_the_closed_ends_of_the_ranges_are_allowed():
    assert FedAvgM(momentum=0.0).momentum == 0.0
    adam = FedAdam(beta1=0.0, beta2=0.0)
    assert (adam.beta1, adam.beta2) == (0.0, 0.0)
    assert Robust(FedAvg(), "trimmed_mean", 0.0).trim_fraction == 0.0


@pytest.mark.parametrize("strategy", [FedAvg, FedAvgM, FedAdam, FedYogi, FedProx, Scaffold])
def test_every_hyperparameter_carries_its_help_and_default(strategy):
    made = strategy()
    for f in fields(strategy):
        assert f.metadata["help"], f.name
        assert getattr(made, f.name) == f.default


def test_documented_defaults():
    assert (FedAdam().server_lr, FedAdam().beta1, FedAdam().beta2, FedAdam().tau) == (
        0.01,
        0.9,
        0.99,
        1e-3,
    )
    assert (FedAvgM().server_lr, FedAvgM().momentum) == (0.1, 0.9)


def test_the_client_is_told_the_payload_and_the_proximal_term():
    state = ServerState.initial(MODEL, seed=0)
    prox = FedProx(mu=0.3).configure_fit(state, FitConfig())
    assert (prox.proximal_mu, prox.payload) == (0.3, "delta")
    assert FedSGD().configure_fit(state, FitConfig(proximal_mu=0.7)).payload == "gradient"
    assert FedAvg().configure_fit(state, FitConfig(proximal_mu=0.7)).proximal_mu == 0.0
    wrapped = Robust(FedProx(mu=0.2)).configure_fit(state, FitConfig())
    assert wrapped.proximal_mu == 0.2
    assert Scaffold().configure_fit(state, FitConfig()).algorithm == "scaffold"
    dyn = FedDyn(alpha=0.3).configure_fit(state, FitConfig())
    assert (dyn.algorithm, dyn.proximal_mu) == ("feddyn", 0.3)
    assert FedNova(mu=0.2).configure_fit(state, FitConfig()).algorithm == "fednova"


def test_a_wrapper_starts_its_inner_optimiser():
    moments = Robust(FedAdam(tau=0.1)).init_optimizer(MODEL)
    np.testing.assert_allclose(moments["v"]["w"], [0.01, 0.01])
    np.testing.assert_array_equal(moments["m"]["w"], [0.0, 0.0])


def test_an_adaptive_step_from_a_state_without_moments_starts_them():
    # the same step as test_fedadam_two_steps' first one, from a bare initial state
    strategy = FedAdam(server_lr=1.0, beta1=0.9, beta2=0.99, tau=0.1)
    bare = ServerState.initial(Params({"w": np.array([0.0])}), seed=0)
    total = WeightedSum(Params({"w": np.array([0.5])}), weight=1.0, count=1)
    np.testing.assert_allclose(
        strategy.server_update(bare, total).params["w"], [0.2365684845], rtol=1e-9
    )


def test_yogi_leaves_v_alone_where_it_already_equals_the_squared_delta():
    # τ = 0.1, so v0 = 0.01 = 0.1²: sign(v − Δ²) = 0, v1 = v0, m1 = 0.01,
    # w1 = 0.01 / (0.1 + 0.1) = 0.05
    strategy = FedYogi(server_lr=1.0, beta1=0.9, beta2=0.99, tau=0.1)
    state = ServerState.initial(Params({"w": np.array([0.0])}), seed=0)
    total = WeightedSum(Params({"w": np.array([0.1])}), weight=1.0, count=1)
    new = strategy.server_update(state, total)
    np.testing.assert_allclose(new.optimizer["v"]["w"], [0.01])
    np.testing.assert_allclose(new.params["w"], [0.05])


def test_a_round_without_what_the_strategy_needs_fails_naming_the_round():
    state = ServerState.initial(MODEL, seed=0).evolve(round=4)
    plain = WeightedSum(MODEL, weight=1.0, count=1)
    with pytest.raises(RoundFailedError, match=r"^round 5 failed: SCAFFOLD's updates carry no Δc$"):
        Scaffold().server_update(state, plain)
    with pytest.raises(
        RoundFailedError,
        match=r"^round 5 failed: fedavg\+median needs the round's individual updates$",
    ):
        Robust(FedAvg()).server_update(state, plain)
    with pytest.raises(
        RoundFailedError, match=r"^round 5 failed: FedNova's updates carry no step counts$"
    ):
        FedNova().server_update(state, plain)
    lying = WeightedSum(MODEL, weight=2.0, count=2, extras={NOVA_STEPS: -2.0})
    with pytest.raises(
        RoundFailedError,
        match=r"^round 5 failed: FedNova's mean step count is -1.0, expected >= 0$",
    ):
        FedNova().server_update(state, lying)
