"""Each strategy's server step against numbers worked out by hand (shown in comments)."""

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
    make_strategy,
)
from fedstream.secure import PlainSum
from fedstream.types import WeightedSum


def vec(*values: float) -> Params:
    return Params({"w": np.array(values, dtype=np.float64)})


def summed(*weighted: tuple[float, Params]) -> WeightedSum:
    acc = PlainSum(weighted[0][1])
    for weight, payload in weighted:
        acc.add(payload, weight)
    return acc.result(round_number=1)


def start(strategy, params: Params) -> ServerState:
    return ServerState.initial(params, seed=0).evolve(optimizer=strategy.init_optimizer(params))


def test_weighted_sum_of_two_clients():
    # 1·[1, 0] + 3·[-1, 4] = [-2, 12], weights 1 + 3 = 4, mean [-0.5, 3]
    total = summed((1.0, vec(1, 0)), (3.0, vec(-1, 4)))
    np.testing.assert_allclose(total.total["w"], [-2, 12])
    assert total.weight == 4.0 and total.count == 2
    np.testing.assert_allclose(total.mean()["w"], [-0.5, 3])


def test_empty_round_is_an_error_not_a_zero_update():
    with pytest.raises(RoundFailedError, match="round 3 failed: no client update"):
        PlainSum(vec(0, 0)).result(round_number=3)


def test_fedavg_adds_the_weighted_mean_delta():
    # w = [1, 2]; mean delta [-0.5, 3] (above) → [0.5, 5]; with server_lr 0.5 → [0.75, 3.5]
    total = summed((1.0, vec(1, 0)), (3.0, vec(-1, 4)))
    state = start(FedAvg(), vec(1, 2))
    np.testing.assert_allclose(FedAvg().server_update(state, total).params["w"], [0.5, 5])
    half = FedAvg(server_lr=0.5).server_update(state, total)
    np.testing.assert_allclose(half.params["w"], [0.75, 3.5])
    assert state.params["w"].tolist() == [1, 2]  # the old state is untouched
    assert half.round == state.round  # the loop, not the strategy, counts rounds


def test_fedprox_server_is_fedavg_and_client_gets_mu():
    total = summed((1.0, vec(1, 0)), (3.0, vec(-1, 4)))
    state = start(FedProx(mu=0.3), vec(1, 2))
    np.testing.assert_allclose(FedProx(mu=0.3).server_update(state, total).params["w"], [0.5, 5])
    assert FedProx(mu=0.3).proximal_mu == 0.3
    assert FedAvg().proximal_mu == 0.0


def test_fedsgd_steps_against_the_weighted_mean_gradient():
    # grads 1·[2, 0] and 3·[0, 4] → mean [0.5, 3]; w = [1, 2] − 0.1·[0.5, 3] = [0.95, 1.7]
    total = summed((1.0, vec(2, 0)), (3.0, vec(0, 4)))
    new = FedSGD(server_lr=0.1).server_update(start(FedSGD(), vec(1, 2)), total)
    np.testing.assert_allclose(new.params["w"], [0.95, 1.7])
    assert FedSGD.payload == "gradient"


def test_fedavgm_accumulates_momentum():
    # β = 0.9, η = 1: m1 = [1, −2], w1 = [2, 0]; m2 = 0.9·m1 + [1, 0] = [1.9, −1.8],
    # w2 = [3.9, −1.8]
    strategy = FedAvgM(server_lr=1.0, momentum=0.9)
    state = start(strategy, vec(1, 2))
    state = strategy.server_update(state, summed((1.0, vec(1, -2))))
    np.testing.assert_allclose(state.params["w"], [2, 0])
    state = strategy.server_update(state, summed((2.0, vec(1, 0))))
    np.testing.assert_allclose(state.optimizer["m"]["w"], [1.9, -1.8])
    np.testing.assert_allclose(state.params["w"], [3.9, -1.8])


def test_fedadam_two_steps():
    # β1 = 0.9, β2 = 0.99, τ = 0.1, η = 1, v0 = τ² = 0.01, w0 = 0
    # Δ1 = 0.5:  m1 = 0.05, v1 = 0.99·0.01 + 0.01·0.25 = 0.0124,
    #            w1 = 0.05 / (√0.0124 + 0.1) = 0.2365684845
    # Δ2 = −0.5: m2 = 0.045 − 0.05 = −0.005, v2 = 0.99·0.0124 + 0.0025 = 0.014776,
    #            w2 = w1 − 0.005 / (√0.014776 + 0.1) = 0.2140008849
    strategy = FedAdam(server_lr=1.0, beta1=0.9, beta2=0.99, tau=0.1)
    state = start(strategy, vec(0))
    np.testing.assert_allclose(state.optimizer["v"]["w"], [0.01])
    state = strategy.server_update(state, summed((1.0, vec(0.5))))
    np.testing.assert_allclose(state.optimizer["v"]["w"], [0.0124])
    np.testing.assert_allclose(state.params["w"], [0.2365684845], rtol=1e-9)
    state = strategy.server_update(state, summed((1.0, vec(-0.5))))
    np.testing.assert_allclose(state.optimizer["m"]["w"], [-0.005])
    np.testing.assert_allclose(state.optimizer["v"]["w"], [0.014776])
    np.testing.assert_allclose(state.params["w"], [0.2140008849], rtol=1e-9)


def test_fedyogi_one_step():
    # v1 = 0.01 − 0.01·0.25·sign(0.01 − 0.25) = 0.0125; w1 = 0.05 / (√0.0125 + 0.1) = 0.2360679775
    strategy = FedYogi(server_lr=1.0, beta1=0.9, beta2=0.99, tau=0.1)
    state = strategy.server_update(start(strategy, vec(0)), summed((1.0, vec(0.5))))
    np.testing.assert_allclose(state.optimizer["v"]["w"], [0.0125])
    np.testing.assert_allclose(state.params["w"], [0.2360679775], rtol=1e-9)


def test_fedadagrad_one_step():
    # v1 = 0.01 + 0.25 = 0.26; w1 = 0.05 / (√0.26 + 0.1) = 0.0819803903
    strategy = FedAdagrad(server_lr=1.0, beta1=0.9, tau=0.1)
    state = strategy.server_update(start(strategy, vec(0)), summed((1.0, vec(0.5))))
    np.testing.assert_allclose(state.optimizer["v"]["w"], [0.26])
    np.testing.assert_allclose(state.params["w"], [0.0819803903], rtol=1e-9)


def test_strategies_hold_no_round_state():
    strategy = FedAdam()
    before = dict(vars(strategy))
    state = start(strategy, vec(1, 2))
    strategy.server_update(state, summed((1.0, vec(1, 1))))
    assert vars(strategy) == before
    with pytest.raises(AttributeError):
        strategy.server_lr = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "hyper", "message"),
    [
        ("fedmagic", {}, "strategy='fedmagic' is invalid: expected one of"),
        ("fedavg", {"server_lr": -1.0}, "server_lr=-1.0 is invalid: expected a finite number > 0"),
        ("fedavgm", {"momentum": 1.0}, r"momentum=1.0 is invalid: expected a number in \[0, 1\)"),
        ("fedadam", {"tau": 0.0}, "tau=0.0 is invalid"),
        ("fedprox", {"mu": -0.1}, "mu=-0.1 is invalid: expected a finite number >= 0"),
        ("fedavg", {"mu": 0.1}, "mu=0.1 is invalid: expected no such hyperparameter for fedavg"),
    ],
)
def test_bad_strategy_configuration_names_field_and_value(name, hyper, message):
    with pytest.raises(ConfigError, match=message):
        make_strategy(name, **hyper)


def test_make_strategy_ignores_unset_hyperparameters():
    assert make_strategy("fedprox", mu=0.5, server_lr=None) == FedProx(mu=0.5)
