import numpy as np
import pytest
import torch
from torch import nn

from fedstream import (
    FitConfig,
    FitTask,
    Params,
    ParamsMismatchError,
    TorchTrainer,
    VectorizedTrainer,
)
from fedstream.client import params_from_module
from fedstream.data import ClientData
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
    cohort = VectorizedTrainer(model, "classification").fit_cohort(start, tasks, clients)
    for one, many in zip(sequential, cohort, strict=True):
        assert one.client_id == many.client_id and one.weight == many.weight
        for name in start:
            np.testing.assert_allclose(many.payload[name], one.payload[name], rtol=1e-4, atol=2e-6)
        assert many.metrics["loss"] == pytest.approx(one.metrics["loss"], rel=1e-5)
        assert one.payload.norm() > 0  # the comparison is not between two zero updates


def test_vectorized_refuses_mixed_cohort_configs():
    model = build_model("linear", 6, 4, seed=0)
    clients = uneven_clients(np.random.default_rng(0))[:2]
    tasks = [FitTask("a", 1, FitConfig(lr=0.1)), FitTask("b", 1, FitConfig(lr=0.2))]
    with pytest.raises(ValueError, match="cohort='b'"):
        VectorizedTrainer(model, "classification").fit_cohort(
            params_from_module(model), tasks, clients
        )


def test_vectorized_refuses_models_with_buffers():
    with pytest.raises(ValueError, match="without buffers"):
        VectorizedTrainer(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), "classification")


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
