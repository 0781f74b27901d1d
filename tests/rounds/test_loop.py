"""The whole round on clients that are functions: exact numbers, failures, determinism."""

from dataclasses import replace

import numpy as np
import pytest

from fedstream import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedSGD,
    FedYogi,
    RoundConfig,
    RoundFailedError,
    ServerState,
    run_round,
)
from fedstream.rounds import run_rounds, server_step
from fedstream.types import WeightedSum
from tests.rounds.scripted import CLIENTS, GLOBAL, delta_of, transport, weight_of


def test_fedavg_moves_by_the_example_weighted_mean_delta():
    state = ServerState.initial(GLOBAL, seed=0)
    config = RoundConfig(clients_per_round=3)
    new, report = run_round(state, FedAvg(), transport(), CLIENTS, config)
    chosen = report.sampled
    mean = sum(weight_of(c) * weight_of(c) for c in chosen) / sum(weight_of(c) for c in chosen)
    np.testing.assert_allclose(new.params["w"], GLOBAL["w"] + np.float32(mean), rtol=1e-7)
    assert new.params["w"].dtype == np.float32
    assert report.completed == chosen and report.failures == ()
    assert report.bytes_down == GLOBAL.wire_size() * (3 + 6)  # fit, then all evaluate
    assert report.bytes_up == 3 * GLOBAL.wire_size()
    assert report.metrics["fed_w0"] == pytest.approx(float(new.params["w"][0]))
    expected_loss = sum(weight_of(c) * (weight_of(c) - 1) for c in chosen) / sum(
        weight_of(c) for c in chosen
    )
    assert report.metrics["train_loss"] == pytest.approx(expected_loss)
    assert new.round == 1 and state.round == 0


def test_a_failing_client_is_reported_and_the_round_goes_on():
    state = ServerState.initial(GLOBAL, seed=0)
    config = RoundConfig(clients_per_round=6, evaluate_fraction=0.0)
    broken = transport(c2=RuntimeError("disk full"), c4=lambda u: replace(u, round=9))
    new, report = run_round(state, FedAvg(), broken, CLIENTS, config)
    assert sorted(report.completed) == ["c0", "c1", "c3", "c5"]
    causes = {f.client_id: (f.stage, f.cause) for f in report.failures}
    assert causes == {
        "c2": ("train", "RuntimeError: disk full"),
        "c4": ("validate", "update is for round 9, expected round 1"),
    }
    weights = [weight_of(c) for c in report.completed]
    mean = sum(w * w for w in weights) / sum(weights)
    np.testing.assert_allclose(new.params["b"], GLOBAL["b"] + np.float32(mean), rtol=1e-7)


def test_a_round_with_too_few_updates_fails_and_leaves_the_state():
    state = ServerState.initial(GLOBAL, seed=0)
    everyone_fails = transport(**{c: RuntimeError("gone") for c in CLIENTS})
    with pytest.raises(RoundFailedError, match="0 of 2 sampled clients gave a valid update"):
        run_round(state, FedAvg(), everyone_fails, CLIENTS, RoundConfig(clients_per_round=2))
    assert state.round == 0


def test_the_same_seed_runs_the_same_rounds_and_a_resume_continues_them():
    config = RoundConfig(clients_per_round=2, evaluate_fraction=0.5)
    start = ServerState.initial(GLOBAL, seed=5)
    straight = list(run_rounds(start, FedAvg(), transport(), CLIENTS, config, until_round=4))
    halfway = straight[1][0]
    resumed = list(run_rounds(halfway, FedAvg(), transport(), CLIENTS, config, until_round=4))
    for (a, ra), (b, rb) in zip(straight[2:], resumed, strict=True):
        assert a.params.bit_equal(b.params) and a.rng_state == b.rng_state
        assert ra.sampled == rb.sampled and ra.evaluations.keys() == rb.evaluations.keys()


def test_a_server_update_that_is_not_finite_fails_the_round():
    state = ServerState.initial(GLOBAL, seed=0)
    aggregate = WeightedSum(delta_of("c0") * np.inf, 1.0, 1)
    with pytest.raises(RoundFailedError, match="round 1 failed: the server update produced NaN"):
        server_step(state, FedSGD(), aggregate, RoundConfig(), state.generator())


def test_the_server_step_prunes_after_the_strategy():
    state = ServerState.initial(GLOBAL.map(lambda a: a.reshape(1, -1)), seed=0)
    aggregate = WeightedSum(state.params.zeros_like(), 1.0, 1)
    pruned = server_step(
        state, FedAvg(), aggregate, RoundConfig(prune_fraction=0.5), state.generator()
    )
    assert pruned.params["w"].tolist() == [[0.0, 2.0]]  # the smaller half is zeroed


@pytest.mark.parametrize("strategy", [FedAdam(), FedAvgM(), FedYogi(), FedAdagrad()])
def test_a_server_optimiser_starts_from_an_initial_state_made_without_it(strategy):
    # the README's step-by-step loop: ServerState.initial knows nothing of the strategy
    state = ServerState.initial(GLOBAL, seed=0)
    for _ in range(2):
        state, _ = run_round(
            state, strategy, transport(), CLIENTS, RoundConfig(clients_per_round=2)
        )
    assert set(state.optimizer) == set(strategy.init_optimizer(GLOBAL))
    assert not state.params.bit_equal(GLOBAL)


def test_a_non_finite_server_update_leaves_out_its_round_and_the_run_goes_on():
    # a server step so large that float32 overflows: the round is left out, the model stays,
    # the failure names the largest contribution, and the next rounds still run
    state = ServerState.initial(GLOBAL, seed=0)
    config = RoundConfig(clients_per_round=3, evaluate_fraction=0.0)
    runs = list(run_rounds(state, FedAvgM(server_lr=1e39), transport(), CLIENTS, config, 2))
    assert [s.round for s, _ in runs] == [1, 2]
    for new, report in runs:
        assert new.params.bit_equal(GLOBAL)
        assert report.completed == () and report.metrics == {}
        (failure,) = report.failures
        heaviest = max(report.sampled, key=weight_of)  # weight k+1 on norm (k+1)·√3
        assert failure.client_id == heaviest and failure.stage == "aggregate"
        assert "NaN or Inf" in failure.cause and "the round was left out" in failure.cause
    # the two rounds sampled afresh: the generator moved on
    assert runs[0][1].sampled != runs[1][1].sampled
