"""FedNova: the server step by hand, FedAvg's step when every client takes as many steps,
and the bounds on what a client says about its steps."""

from dataclasses import replace

import numpy as np
import pytest

import fedstream
from fedstream import ClientUpdate, ConfigError, Params, ServerState
from fedstream.client.algorithms import NOVA_STEPS
from fedstream.errors import RoundFailedError
from fedstream.rounds import check_update
from fedstream.strategies import FedNova
from fedstream.types import FitConfig, WeightedSum
from tests.runs import assert_secure_sum_matches_plain, vectorised_and_sequential
from tests.settings import make_config, nested

MODEL = Params({"w": np.array([1.0, 2.0])})


def test_the_server_step_by_hand():
    # weights 1 and 3, a = 2 and 4 steps, normalised deltas (0.1, 0) and (0, 0.2):
    # Σ w·d = (0.1, 0.6), Σ w = 4, Σ w·a = 2 + 12 = 14, so τ_eff = 3.5 and the mean
    # d = (0.025, 0.15); with η = 0.5 the step is 0.5 · 3.5 · d = (0.04375, 0.2625)
    state = ServerState.initial(MODEL, seed=0)
    total = Params({"w": np.array([0.1, 0.6])})
    aggregate = WeightedSum(total, weight=4.0, count=2, extras={NOVA_STEPS: 14.0})
    new = FedNova(server_lr=0.5).server_update(state, aggregate)
    np.testing.assert_allclose(new.params["w"], [1.04375, 2.2625], rtol=1e-12)
    assert FedNova().server_update(state, WeightedSum(total * 0, 0.0, 0)) is state
    with pytest.raises(RoundFailedError, match="FedNova's updates carry no step counts"):
        FedNova().server_update(state, WeightedSum(total, 4.0, 2))
    with pytest.raises(RoundFailedError, match=r"mean step count is -0\.25, expected >= 0"):
        FedNova().server_update(state, replace(aggregate, extras={NOVA_STEPS: -1.0}))
    # fractional weights and steps (FedProx's decaying steps, a_i < 1) are steps too: a sum
    # of weight 0.5 with Σ w·a = 0.25 has τ_eff = 0.5, and a round of no steps stays put
    small = WeightedSum(total, weight=0.5, count=1, extras={NOVA_STEPS: 0.25})
    moved = FedNova().server_update(state, small)
    np.testing.assert_allclose(moved.params["w"], [1.0 + 0.5 * 0.2, 2.0 + 0.5 * 1.2])
    still = FedNova().server_update(state, replace(small, extras={NOVA_STEPS: 0.0}))
    assert still.params.bit_equal(state.params)


def test_with_equal_steps_everywhere_fednova_takes_fedavgs_step():
    # an IID split of digits over 10 clients: 143 or 144 training rows each, so at batch 32
    # every client takes 5 steps an epoch, and τ_eff·Σ p·Δ/τ = Σ p·Δ
    equal = {"partition": "iid", "num_clients": 10, "clients_per_round": 10, "rounds": 3}
    fedavg = fedstream.simulate(**nested(strategy="fedavg", batch_size=32, **equal))
    fednova = fedstream.simulate(**nested(strategy="fednova", batch_size=32, **equal))
    for name in fedavg.state.params:
        np.testing.assert_allclose(
            fednova.state.params[name], fedavg.state.params[name], rtol=1e-5, atol=1e-6
        )


def test_where_label_skew_meets_unequal_sizes_fednova_beats_fedavg():
    # Dirichlet 0.1 gives each client its own labels and its own size, so with 3 local
    # epochs the large clients take many more steps and FedAvg drifts to their optimum
    skewed = {"alpha": 0.1, "local_epochs": 3, "rounds": 10}
    fedavg = fedstream.simulate(**nested(strategy="fedavg", **skewed))
    fednova = fedstream.simulate(**nested(strategy="fednova", **skewed))
    assert fedavg.final_metrics["central_accuracy"] == pytest.approx(0.5237, abs=1e-4)
    assert fednova.final_metrics["central_accuracy"] == pytest.approx(0.6267, abs=1e-4)


def test_a_client_that_overstates_its_steps_is_rejected():
    # 10 examples, 2 epochs of batch 4: at most 2·⌈10/4⌉ = 6 steps, so at most 60 in the sum
    fit = FitConfig(local_epochs=2, batch_size=4, algorithm="fednova")
    update = ClientUpdate("c0", 1, MODEL * 0.1, 10.0, extras={NOVA_STEPS: 60.0})
    assert check_update(update, MODEL, 1, None, fit) is None
    for lie in (60.5, -1.0):
        assert check_update(replace(update, extras={NOVA_STEPS: lie}), MODEL, 1, None, fit) == (
            f"extras['fednova.steps']={lie!r} is invalid: expected weight × local steps, in [0, 60]"
        )
    assert "extras['fednova.steps']=None is invalid" in check_update(
        replace(update, extras={}), MODEL, 1, None, fit
    )
    # the full batch (batch_size 0) is one step an epoch: at most 10 × 2 = 20
    full = FitConfig(local_epochs=2, batch_size=0, algorithm="fednova")
    assert check_update(replace(update, extras={NOVA_STEPS: 20.0}), MODEL, 1, None, full) is None
    assert "in [0, 20]" in check_update(update, MODEL, 1, None, full)


def test_fednova_composes_with_secure_sums_compression_and_the_vectorised_trainer():
    run = {"strategy": "fednova", "partition": "quantity", "rounds": 2, "evaluate_every": 0}
    small = {"num_clients": 20, "clients_per_round": 6}
    assert_secure_sum_matches_plain(run)
    plain = fedstream.simulate(**nested(**run, **small))
    # top-k compresses the normalised delta; the step count rides beside it, exact
    compressed = fedstream.simulate(**nested(compression="topk:0.1", **run, **small))
    assert [len(r.completed) for r in compressed.reports] == [6, 6]
    assert not compressed.state.params.bit_equal(plain.state.params)
    vectorised_and_sequential(run)


def test_fednova_refuses_differential_privacy_and_robust_rules_and_says_why():
    with pytest.raises(
        ConfigError,
        match=r"^strategy\.aggregator='median' is invalid: expected 'mean' with FedNova \(its",
    ):
        make_config(strategy="fednova", aggregator="median")
    for level in ("client", "local", "sample"):
        with pytest.raises(
            ConfigError,
            match=rf"^privacy\.level='{level}' is invalid: expected 'none' with FedNova \(each",
        ):
            make_config(strategy="fednova", dp=level)
