import dataclasses

import pytest

from fedstream import ConfigError, FedAvg, FedProx, RoundConfig, ServerState
from fedstream.errors import ClientFailure
from fedstream.rounds import plan_round, sample_clients, sample_size
from tests.rounds.scripted import CLIENTS, GLOBAL


def test_sample_size_by_count_fraction_and_minimum():
    assert sample_size(100, 20, 1) == 20
    assert sample_size(100, 0.1, 1) == 10
    assert sample_size(100, 0.001, 1) == 1  # ⌈0.1⌉
    assert sample_size(100, 0.05, 8) == 8
    with pytest.raises(
        ConfigError,
        match="clients_per_round=30 is invalid: expected at most the number of clients \\(20\\)",
    ):
        sample_size(20, 30, 1)


def test_a_plan_samples_seeds_and_configures_every_task():
    state = ServerState.initial(GLOBAL, seed=3)
    config = RoundConfig(clients_per_round=4, local_epochs=3, batch_size=5, lr=0.2)
    plan = plan_round(state, FedProx(mu=0.5), CLIENTS, config, state.generator())
    rng = state.generator()
    assert plan.round == 1
    assert plan.sampled == sample_clients(rng, CLIENTS, 4)  # the sample is drawn first
    assert [t.config.seed for t in plan.tasks] == [int(s) for s in rng.integers(0, 2**63 - 1, 4)]
    assert [t.client_id for t in plan.tasks] == list(plan.sampled)
    for task in plan.tasks:
        assert task.round == 1
        assert (task.config.local_epochs, task.config.batch_size, task.config.lr) == (3, 5, 0.2)
        assert task.config.proximal_mu == 0.5  # the strategy's part of the client objective
    assert plan.fit.proximal_mu == 0.5 and plan.failures == ()
    for task in plan.tasks:  # with_seed is replace(…, seed=…), made cheaply
        assert task.config == dataclasses.replace(plan.fit, seed=task.config.seed)
        assert hash(task.config) == hash(dataclasses.replace(plan.fit, seed=task.config.seed))
    assert plan.fit.seed == 0  # the shared config is left as it was


def test_a_task_policy_draws_after_the_plan_and_may_drop_clients():
    state = ServerState.initial(GLOBAL, seed=3)
    config = RoundConfig(clients_per_round=4)
    drawn = []

    def drop_first(tasks, rng):
        drawn.append(rng.random())
        failure = ClientFailure(tasks[0].client_id, "straggle", "too slow")
        return list(tasks[1:]), [failure]

    plain = plan_round(state, FedAvg(), CLIENTS, config, state.generator())
    rng = state.generator()
    plan = plan_round(state, FedAvg(), CLIENTS, config, rng, drop_first)
    assert plan.sampled == plain.sampled  # the policy does not change the sample
    assert plan.tasks == plain.tasks[1:]
    assert plan.failures == (ClientFailure(plain.sampled[0], "straggle", "too slow"),)
    replay = state.generator()
    replay.choice(6, 4, replace=False), replay.integers(0, 2**63 - 1, 4)
    assert drawn == [replay.random()]  # its draw came right after the seeds
    assert rng.random() == replay.random()
