import json
import math

import numpy as np
import pytest

import fedstream
from fedstream import ConfigError
from fedstream.strategies import STRATEGIES
from fedstream.transport.inprocess import InProcessTransport
from tests.settings import make_config, nested


@pytest.mark.slow  # a whole run or a process, seconds
def test_default_job_reaches_ninety_percent_and_writes_its_outputs(tmp_path):
    result = fedstream.simulate(output_dir=tmp_path)
    assert len(result.reports) == 30
    assert result.final_metrics["central_accuracy"] >= 0.90
    assert result.client_updates == 30 * 20

    document = json.loads((tmp_path / "results.json").read_text())
    assert document["error"] is None
    assert document["config"]["strategy"]["name"] == "fedavg"
    assert document["config"]["data"]["num_clients"] == 100
    assert document["versions"]["fedstream"] == fedstream.__version__
    assert len(document["rounds"]) == 30
    assert document["final_metrics"]["central_accuracy"] == result.final_metrics["central_accuracy"]
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("round,completed,failed,train_loss")
    assert len(lines) == 31
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize("trainer", ["sequential", "vectorized"])
def test_same_seed_gives_bit_identical_parameters(trainer):
    settings = {"rounds": 4, "trainer": trainer, "evaluate_every": 0, "seed": 11}
    first = fedstream.simulate(**nested(**settings))
    second = fedstream.simulate(**nested(**settings))
    assert first.state.params.bit_equal(second.state.params)
    assert [r.sampled for r in first.reports] == [r.sampled for r in second.reports]
    other = fedstream.simulate(**nested(**{**settings, "seed": 12}))
    assert not first.state.params.bit_equal(other.state.params)


def test_vectorized_and_sequential_runs_agree():
    settings = {"rounds": 3, "evaluate_every": 0, "strategy": "fedprox", "mu": 0.1}
    sequential = fedstream.simulate(**nested(trainer="sequential", **settings))
    vectorized = fedstream.simulate(**nested(trainer="vectorized", **settings))
    for name in sequential.state.params:
        np.testing.assert_allclose(
            vectorized.state.params[name], sequential.state.params[name], rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize(
    "strategy",
    sorted(STRATEGIES),
)
def test_every_strategy_trains_end_to_end(strategy):
    head = {"personal": ("4",)} if strategy == "fedrep" else {}  # FedRep needs a head
    result = fedstream.simulate(**nested(strategy=strategy, rounds=3, evaluate_every=0, **head))
    first = fedstream.simulate(**nested(strategy=strategy, rounds=1, evaluate_every=0, **head))
    assert result.state.params.is_finite()
    loss, first_loss = result.final_metrics["central_loss"], first.final_metrics["central_loss"]
    # below chance (ln 10) and below round 1: a server step that is never applied leaves the
    # loss where round 1 had it (the slowest, FedSGD, gains 0.004 in rounds 2 and 3)
    assert loss < math.log(10)
    assert loss < first_loss - 0.002, (first_loss, loss)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        (
            {"strategy": {"name": "fedmagic"}},
            "strategy.name='fedmagic' is invalid: expected one of",
        ),
        ({"client": {"lr": -0.5}}, "client.lr=-0.5 is invalid: expected a finite number > 0"),
        (
            {"run": {"clients_per_round": 1.5}},
            r"run\.clients_per_round=1\.5 is invalid: expected a number in \(0, 1\]",
        ),
        ({"run": {"clients_per_round": 0.0}}, r"run\.clients_per_round=0\.0 is invalid"),
        (
            {"run": {"clients_per_round": 101}},
            r"run\.clients_per_round=101 is invalid: expected at most data\.num_clients \(100\)",
        ),
        ({"data": {"dataset": "mnist"}}, "data.dataset='mnist' is invalid: expected one of"),
        ({"data": {"num_clients": 0}}, "data.num_clients=0 is invalid"),
        (
            {"strategy": {"mu": 0.1}},
            r"strategy\.mu=0\.1 is invalid: expected a hyperparameter of fedavg: \['server_lr'\]",
        ),
        (
            {"client": {"learning_rat": 0.1}},
            r"client\.learning_rat=0\.1 is invalid: expected a setting of \[client\]",
        ),
        ({"run": {"rounds": "many"}}, "run.rounds='many' is invalid: expected int"),
        ({"rounds": 5}, r"rounds=5 is invalid: expected the key 'run\.rounds' now"),
    ],
)
def test_bad_settings_name_the_field_and_value(sections, message):
    with pytest.raises(ConfigError, match=message):
        fedstream.simulate(**sections)


def test_a_partition_that_would_leave_a_client_empty_is_an_error():
    with pytest.raises(ConfigError, match="num_clients=2000 is invalid: expected at most 1438"):
        fedstream.simulate(**nested(num_clients=2000, clients_per_round=10, rounds=1))
    with pytest.raises(
        ConfigError, match=r"each of 1000 clients at least 1 examples .* raise alpha"
    ):
        fedstream.simulate(**nested(num_clients=1000, clients_per_round=10, rounds=1))


def test_a_client_that_raises_is_reported_and_the_round_goes_on():
    # 0 local examples cannot happen through the partitioner, so break one client's data
    config = make_config(rounds=2, clients_per_round=1.0, evaluate_every=0, trainer="sequential")
    setup = fedstream.simulation.build(config)
    clients = dict(setup.dataset.clients)
    broken = next(iter(clients))
    data = clients[broken]
    clients[broken] = type(data)(data.x_train[:, :3], data.y_train, data.x_test[:, :3], data.y_test)
    state, report = fedstream.run_round(
        setup.initial,
        config.build_strategy(),
        InProcessTransport(clients, setup.trainer),
        sorted(setup.dataset.clients),
        config.round_config(),
        evaluate=False,
    )
    (failure,) = report.failures
    assert failure.client_id == broken and failure.stage == "train"
    assert "RuntimeError" in failure.cause and "shapes cannot be multiplied" in failure.cause
    assert len(report.completed) == 99 and state.round == 1


def test_an_empty_client_is_refused_by_name():
    from fedstream import InProcessTransport, TorchTrainer
    from fedstream.data import ClientData
    from fedstream.models import build_model

    x = np.zeros((3, 4), np.float32)
    y = np.zeros(3, np.int64)
    clients = {"full": ClientData(x, y, x, y), "hollow": ClientData(x[:0], y[:0], x, y)}
    trainer = TorchTrainer(build_model("linear", 4, 2, seed=0), "classification")
    with pytest.raises(ConfigError, match=r"clients\['hollow'\]='0 training examples' is invalid"):
        InProcessTransport(clients, trainer)
    mismatched = {"odd": ClientData(x, y[:2], x, y)}
    with pytest.raises(ConfigError, match=r"clients\['odd'\].y_train='2 targets' is invalid"):
        InProcessTransport(mismatched, trainer)


def test_a_run_that_fails_midway_keeps_the_rounds_it_finished(tmp_path, monkeypatch):
    from fedstream.client.vectorized import VectorizedTrainer

    real = VectorizedTrainer.fit_cohort
    calls = {"n": 0}

    def fail_in_round_three(self, params, tasks, datasets, starts=None):
        calls["n"] += 1
        if tasks[0].round == 3:
            raise OSError("the machine room flooded")
        return real(self, params, tasks, datasets, starts)

    monkeypatch.setattr(VectorizedTrainer, "fit_cohort", fail_in_round_three)
    with pytest.raises(fedstream.RoundFailedError, match="round 3 failed") as caught:
        fedstream.simulate(output_dir=tmp_path, **nested(rounds=5))
    assert "OSError: the machine room flooded" in str(caught.value)
    document = json.loads((tmp_path / "results.json").read_text())
    assert [r["round"] for r in document["rounds"]] == [1, 2]
    assert "round 3 failed" in document["error"]
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 3


def test_stragglers_train_the_same_vectorised_as_one_at_a_time():
    """Stragglers' tasks differ in epochs, so the in-process transport trains them in
    cohorts of their own; the result must match the sequential trainer."""
    from fedstream.simulation import preset

    settings = {
        "local_epochs": 4,
        "rounds": 3,
        "straggler_fraction": 0.5,
        "drop_stragglers": False,
        "strategy": "fedprox",
        "mu": 0.5,
        "evaluate_every": 0,
        "num_clients": 12,
        "clients_per_round": 6,
    }
    sequential = fedstream.simulate(
        preset("fedprox_synthetic", **nested(trainer="sequential", **settings))
    )
    vectorized = fedstream.simulate(
        preset("fedprox_synthetic", **nested(trainer="vectorized", **settings))
    )
    for name in sequential.state.params:
        np.testing.assert_allclose(
            vectorized.state.params[name], sequential.state.params[name], rtol=1e-4, atol=1e-5
        )


def test_outputs_get_the_usual_permissions_not_mkstemps_private_ones(tmp_path):
    import os
    import stat

    from fedstream.simulation.report import atomic_write

    umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", b"{}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


def test_cohorts_keep_task_order_or_group_similar_sizes_within_the_memory_budget():
    from fedstream.transport.inprocess import _cohorts

    sizes = {"a": 5, "b": 50, "c": 6, "d": 49, "e": 7}
    fit = fedstream.FitConfig()
    tasks = [fedstream.FitTask(c, 1, fit) for c in sizes]
    tasks.append(fedstream.FitTask("f", 1, fedstream.FitConfig(lr=0.5)))  # another config
    sizes["f"] = 1

    def plan(max_clients: int, budget: int) -> list[list[str]]:
        cut = _cohorts(tasks, lambda ids: [sizes[c] for c in ids], 100, 250, max_clients, budget)
        return [[t.client_id for t in cohort] for cohort in cut]

    # a group that fits in one cohort stays in task order (its block needs no reorder)
    assert plan(256, 10**9) == [["a", "b", "c", "d", "e"], ["f"]]
    # per client: 4 × 250 B of params + its padded rows × 100 B; 5 × 6000 B is too much
    assert plan(256, 29_999) == [["a", "c", "e", "d"], ["b"], ["f"]]
    assert plan(256, 30_000) == [["a", "b", "c", "d", "e"], ["f"]]
    assert plan(2, 10**9) == [["a", "c"], ["e", "d"], ["b"], ["f"]]
    # 3 small clients fit in 3 × (1000 + 700) B; the large ones need 6000 B each
    assert plan(256, 6000) == [["a", "c", "e"], ["d"], ["b"], ["f"]]


def test_the_digits_cnn_trains_vectorised_and_learns():
    result = fedstream.simulate(
        **nested(model="cnn", num_clients=10, clients_per_round=5, rounds=3, evaluate_every=1)
    )
    assert result.trainer.startswith("vectorized")
    shapes = {name: a.shape for name, a in result.state.params.items()}
    assert any(len(shape) == 4 for shape in shapes.values())  # a convolution's kernel
    losses = [r.metrics["central_loss"] for r in result.reports]
    assert losses[2] < losses[0] < math.log(10), losses
