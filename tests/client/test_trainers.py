import numpy as np
import pytest
import torch
from torch import nn

from fedstream import (
    ConfigError,
    FitConfig,
    FitTask,
    Params,
    ParamsMismatchError,
    TorchTrainer,
    VectorizedTrainer,
)
from fedstream.client import params_from_module
from fedstream.data import ClientData
from fedstream.data.base import Clients, packed
from fedstream.models import build_model


def one_weight_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(1, 1)).double()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.fill_(0.0)
    return model


def single_example() -> ClientData:
    x = np.array([[1.0]])
    y = np.array([0.0])
    return ClientData(x, y, x, y)


@pytest.mark.parametrize("trainer_cls", [TorchTrainer, VectorizedTrainer])
def test_fedprox_local_steps_by_hand(trainer_cls):
    # x = 1, y = 0, w = 1, b = 0, loss (wx + b − y)², lr 0.1, two epochs of one example.
    # step 1: out 1, grads (2, 2), prox grad 0 → w 0.8, b −0.2
    # step 2: out 0.6, grads (1.2, 1.2); with μ = 1 add (w − 1, b − 0) = (−0.2, −0.2) → (1.0, 1.0)
    #         → w 0.7, b −0.3 (delta −0.3, −0.3); with μ = 0 → w 0.68, b −0.32
    model = one_weight_model()
    trainer = trainer_cls(model, "regression")
    start = params_from_module(model)
    for mu, expected in ((1.0, [-0.3, -0.3]), (0.0, [-0.32, -0.32])):
        config = FitConfig(local_epochs=2, batch_size=1, lr=0.1, proximal_mu=mu)
        update = trainer.fit(start, FitTask("c", 1, config), single_example())
        np.testing.assert_allclose(
            [update.payload["0.weight"].item(), update.payload["0.bias"].item()], expected
        )
        assert update.weight == 1.0


def uneven_clients(rng: np.random.Generator) -> list[ClientData]:
    clients = []
    for size in (3, 17, 10, 1, 25):
        x = rng.normal(size=(size, 6)).astype(np.float32)
        y = rng.integers(0, 4, size=size).astype(np.int64)
        clients.append(ClientData(x, y, x[:2], y[:2]))
    return clients


@pytest.mark.parametrize(
    "config",
    [
        FitConfig(local_epochs=1, batch_size=4, lr=0.1),
        FitConfig(local_epochs=3, batch_size=7, lr=0.05),
        FitConfig(local_epochs=2, batch_size=4, lr=0.1, proximal_mu=0.5),
        FitConfig(local_epochs=2, batch_size=0, lr=0.1, proximal_mu=0.1),
        FitConfig(payload="gradient"),
    ],
    ids=["fedavg", "epochs", "fedprox", "fullbatch-prox", "fedsgd-gradient"],
)
def test_vectorized_cohort_equals_one_client_at_a_time(config):
    rng = np.random.default_rng(3)
    clients = uneven_clients(rng)
    model = build_model("mlp", 6, 4, seed=1, hidden=(8,))
    start = params_from_module(model)
    tasks = [
        FitTask(f"c{k}", 2, FitConfig(**{**vars(config), "seed": 100 + k}))
        for k in range(len(clients))
    ]
    sequential = [
        TorchTrainer(model, "classification").fit(start, t, d)
        for t, d in zip(tasks, clients, strict=True)
    ]
    cohort = VectorizedTrainer(model, "classification").fit_cohort(start, tasks, clients).rows()
    for one, many in zip(sequential, cohort, strict=True):
        assert one.client_id == many.client_id and one.weight == many.weight
        for name in start:
            np.testing.assert_allclose(many.payload[name], one.payload[name], rtol=1e-4, atol=2e-6)
        assert many.metrics["loss"] == pytest.approx(one.metrics["loss"], rel=1e-5)
        assert one.payload.norm() > 0  # the comparison is not between two zero updates


def test_a_pooled_cohort_trains_to_the_same_bits_as_a_list_of_its_clients():
    rng = np.random.default_rng(5)
    listed = uneven_clients(rng)
    rows = [np.arange(len(c.y_train)) for c in listed]
    offsets = np.cumsum([0, *(len(r) for r in rows)])
    pool = Clients(
        [f"c{k}" for k in range(len(listed))],
        np.concatenate([c.x_train for c in listed]),
        np.concatenate([c.y_train for c in listed]),
        *packed([r + offsets[k] for k, r in enumerate(rows)]),
        np.zeros(0, np.int64),
        np.zeros(len(listed) + 1, np.int64),
    )
    order = [3, 0, 4, 1, 2]
    model = build_model("mlp", 6, 4, seed=1, hidden=(8,))
    start = params_from_module(model)
    tasks = [FitTask(f"c{k}", 2, FitConfig(local_epochs=2, batch_size=4, seed=k)) for k in order]
    trainer = VectorizedTrainer(model, "classification")
    from_list = trainer.fit_cohort(start, tasks, [listed[k] for k in order])
    from_pool = trainer.fit_cohort(start, tasks, pool.cohort([t.client_id for t in tasks]))
    assert from_pool.client_ids == from_list.client_ids
    np.testing.assert_array_equal(from_pool.weights, from_list.weights)
    for name in start:
        np.testing.assert_array_equal(from_pool.payload[name], from_list.payload[name])
    assert from_pool.metrics == from_list.metrics


def test_vectorized_refuses_mixed_cohort_configs():
    model = build_model("linear", 6, 4, seed=0)
    clients = uneven_clients(np.random.default_rng(0))[:2]
    tasks = [FitTask("a", 1, FitConfig(lr=0.1)), FitTask("b", 1, FitConfig(lr=0.2))]
    with pytest.raises(ValueError, match="cohort='b'"):
        VectorizedTrainer(model, "classification").fit_cohort(
            params_from_module(model), tasks, clients
        )


def batch_norm_model(dropout: float = 0.0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, 4)
        )


def cohort_tasks(count, **settings):
    return [FitTask(f"c{k}", 1, FitConfig(seed=10 + k, **settings)) for k in range(count)]


def test_batch_norm_trains_the_same_vectorised_with_per_client_statistics():
    # sizes 3, 17, 10, 1, 25 with batch 4: short last batches of 3, 1, 2, 1 and a client of
    # one example, whose batches of one batch norm cannot train on
    clients = uneven_clients(np.random.default_rng(4))
    model = batch_norm_model()
    start = params_from_module(model)
    tasks = cohort_tasks(len(clients), local_epochs=2, batch_size=4, lr=0.1)
    sequential = [
        TorchTrainer(model, "classification").fit(start, t, d)
        for t, d in zip(tasks, clients, strict=True)
    ]
    cohort = VectorizedTrainer(model, "classification").fit_cohort(start, tasks, clients).rows()
    for one, many in zip(sequential, cohort, strict=True):
        for name in start:
            assert many.payload[name].dtype == start[name].dtype
            np.testing.assert_allclose(many.payload[name], one.payload[name], rtol=1e-4, atol=2e-6)
    # 17 examples: 4 batches of 4 and one of 1, skipped: 4 steps an epoch; the lone client
    # took no step at all, and says so
    assert [u.payload["1.num_batches_tracked"].item() for u in cohort] == [2, 8, 6, 0, 12]
    assert cohort[3].metrics == {} and cohort[3].payload.norm() == 0
    stats = [u.payload["1.running_mean"] for u in cohort]
    assert not np.allclose(stats[1], stats[2])  # each client's own statistics


def test_dropout_draws_from_the_task_seed_in_both_trainers():
    clients = uneven_clients(np.random.default_rng(5))
    model = batch_norm_model(dropout=0.5)
    start = params_from_module(model)
    tasks = cohort_tasks(len(clients), local_epochs=1, batch_size=5, lr=0.1)
    one_at_a_time = TorchTrainer(model, "classification")
    first = one_at_a_time.fit(start, tasks[1], clients[1])
    torch.manual_seed(1234)  # whatever the global generator holds does not matter
    assert one_at_a_time.fit(start, tasks[1], clients[1]).payload.bit_equal(first.payload)
    other_seed = FitTask("c1", 1, FitConfig(seed=99, local_epochs=1, batch_size=5, lr=0.1))
    assert not one_at_a_time.fit(start, other_seed, clients[1]).payload.bit_equal(first.payload)
    vectorised = VectorizedTrainer(model, "classification")
    a = vectorised.fit_cohort(start, tasks, clients).rows()
    b = vectorised.fit_cohort(start, tasks, clients).rows()
    assert all(x.payload.bit_equal(y.payload) for x, y in zip(a, b, strict=True))
    before = torch.get_rng_state()
    vectorised.fit_cohort(start, tasks, clients)
    assert torch.equal(torch.get_rng_state(), before)  # the global generator is left as it was


def test_a_cohort_trains_each_client_from_its_own_start():
    clients = uneven_clients(np.random.default_rng(6))[:3]
    model = batch_norm_model()
    start = params_from_module(model)
    own = [start.map(lambda a, k=k: a + k if a.dtype.kind == "f" else a) for k in range(3)]
    tasks = cohort_tasks(3, batch_size=4, lr=0.1)
    cohort = (
        VectorizedTrainer(model, "classification").fit_cohort(start, tasks, clients, own).rows()
    )
    for task, data, begin, many in zip(tasks, clients, own, cohort, strict=True):
        one = TorchTrainer(model, "classification").fit(begin, task, data)
        np.testing.assert_allclose(many.payload.flat(), one.payload.flat(), rtol=1e-4, atol=1e-5)


def test_params_with_wrong_names_are_refused():
    model = build_model("linear", 6, 4, seed=0)
    wrong = Params({"weight": np.zeros((4, 6), np.float32), "bias": np.zeros(4, np.float32)})
    data = uneven_clients(np.random.default_rng(0))[0]
    with pytest.raises(ParamsMismatchError, match=r"missing \['0.weight', '0.bias'\]"):
        TorchTrainer(model, "classification").fit(wrong, FitTask("a", 1, FitConfig()), data)


def test_client_without_examples_is_an_error():
    model = build_model("linear", 6, 4, seed=0)
    empty = ClientData(
        np.zeros((0, 6), np.float32),
        np.zeros(0, np.int64),
        np.zeros((0, 6), np.float32),
        np.zeros(0, np.int64),
    )
    for trainer in (
        TorchTrainer(model, "classification"),
        VectorizedTrainer(model, "classification"),
    ):
        with pytest.raises(ValueError, match="client 'lonely' has no training examples"):
            trainer.fit(params_from_module(model), FitTask("lonely", 1, FitConfig()), empty)


def test_training_does_not_change_the_global_params():
    model = build_model("mlp", 6, 4, seed=1, hidden=(8,))
    start = params_from_module(model)
    frozen = start.copy()
    data = uneven_clients(np.random.default_rng(1))[1]
    TorchTrainer(model, "classification").fit(start, FitTask("a", 1, FitConfig(lr=0.5)), data)
    assert start.bit_equal(frozen)


def test_an_unknown_task_is_refused_with_the_nearest_name():
    with pytest.raises(
        ConfigError, match=r"task='classifcation' .* \(did you mean 'classification'\?\)"
    ):
        TorchTrainer(one_weight_model(), "classifcation")


def test_the_users_optimiser_loss_and_metrics_are_used():
    model, data = one_weight_model(), single_example()
    start = params_from_module(model)
    task = FitTask("c", 1, FitConfig(local_epochs=1, batch_size=1, lr=0.1))
    plain = TorchTrainer(model, "regression").fit(start, task, data)
    sgd = TorchTrainer(model, "regression", optimizer=lambda p, lr: torch.optim.SGD(p, lr=lr))
    assert sgd.fit(start, task, data).payload.bit_equal(plain.payload)  # the same steps
    adam = TorchTrainer(model, "regression", optimizer=lambda p, lr: torch.optim.Adam(p, lr=lr))
    # Adam's first step is lr·g/(|g| + ε): 0.1 against the sign of each gradient (2, 2)
    np.testing.assert_allclose(adam.fit(start, task, data).payload.flat(), [-0.1, -0.1], rtol=1e-6)
    # L1 loss |w·1 + b − 0| has gradient (1, 1) at w = 1, b = 0: one SGD step moves each by 0.1
    l1 = TorchTrainer(model, "regression", loss=lambda out, y: (out.squeeze(-1) - y).abs().mean())
    np.testing.assert_allclose(l1.fit(start, task, data).payload.flat(), [-0.1, -0.1], rtol=1e-6)
    scored = TorchTrainer(
        model, "regression", metrics=lambda out, y: {"max_error": (out.squeeze(-1) - y).abs().max()}
    )
    result = scored.evaluate(start, "c", 1, data)
    assert result.metrics == {"loss": 1.0, "max_error": 1.0}  # (1·1 + 0 − 0)² and |1 − 0|


def test_the_users_own_training_and_evaluation_functions_run_with_the_task_seed():
    model, data = one_weight_model(), single_example()
    seen = []

    def train(module, client, config, rng):
        seen.append(rng.integers(1 << 30))
        with torch.no_grad():
            module[0].weight.add_(config.lr)
        return {"steps": 1}

    def evaluate(module, client):
        return client.num_test, {"weight": module[0].weight.item()}

    trainer = TorchTrainer(model, "regression", train=train, evaluate=evaluate)
    start = params_from_module(model)
    task = FitTask("c", 1, FitConfig(lr=0.25, seed=7))
    update = trainer.fit(start, task, data)
    assert update.payload["0.weight"].item() == 0.25 and update.metrics == {"steps": 1.0}
    trainer.fit(start, task, data)
    assert seen[0] == seen[1] == np.random.default_rng(7).integers(1 << 30)
    assert trainer.evaluate(start, "c", 1, data).metrics == {"weight": 1.0}


@pytest.mark.parametrize(
    ("part", "function", "message"),
    [
        ("train", lambda m, d, c, r: 0.5, "train function's result for client 'c'=0.5 is invalid"),
        (
            "train",
            lambda m, d, c, r: {"loss": "low"},
            "expected a mapping of metric names to numbers",
        ),
        (
            "evaluate",
            lambda m, d: {"accuracy": 1.0},
            "expected a tuple \\(num_examples, metrics\\)",
        ),
        ("evaluate", lambda m, d: (-1, {}), "an integer number of examples >= 0"),
    ],
)
def test_a_user_function_that_returns_the_wrong_structure_is_named(part, function, message):
    model = one_weight_model()
    trainer = TorchTrainer(model, "regression", **{part: function})
    start = params_from_module(model)
    with pytest.raises(ConfigError, match=message):
        if part == "train":
            trainer.fit(start, FitTask("c", 1, FitConfig()), single_example())
        else:
            trainer.evaluate(start, "c", 1, single_example())


def test_the_device_is_the_gpu_when_there_is_one_and_a_bad_one_is_named():
    trainer = TorchTrainer(one_weight_model(), "regression")
    assert trainer.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device='tpu:9' is invalid"):
        TorchTrainer(one_weight_model(), "regression", device="tpu:9")
