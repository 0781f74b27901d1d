"""The seed's Keras example — Dense(10, relu) then Dense(1) — trained federated on diabetes."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import numpy as np
import pytest

from fedstream import (
    ConfigError,
    FedAvg,
    FitConfig,
    FitTask,
    InProcessTransport,
    RoundConfig,
    ServerState,
    run_rounds,
)
from fedstream.client.keras_trainer import KerasTrainer, keras_params
from fedstream.data import federate


def seed_model(features: int):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((features,)), keras.layers.Dense(10, activation="relu"), keras.layers.Dense(1)]
    )


@pytest.mark.slow  # a whole run or a process, seconds
def test_keras_regression_trains_federated():
    data = federate("diabetes", 10, "iid", np.random.default_rng(0))
    model = seed_model(data.num_features)
    start = keras_params(model)
    assert list(start) == ["0/kernel", "1/bias", "2/kernel", "3/bias"]
    transport = InProcessTransport(data.clients, KerasTrainer(model, "regression"))
    config = RoundConfig(clients_per_round=10, local_epochs=2, batch_size=16, lr=0.002)
    reports = [
        r
        for _, r in run_rounds(
            ServerState.initial(start, 0), FedAvg(), transport, sorted(data.clients), config, 12
        )
    ]
    first, last = reports[0].metrics["fed_loss"], reports[-1].metrics["fed_loss"]
    # predicting the mean gives an MSE of about 5,900 on this data; a fit does far better
    assert last < 3500 < first
    assert all(not r.failures for r in reports)


def test_a_second_model_of_one_architecture_has_the_same_names():
    # Keras numbers layers per process (sequential_1/dense_2/…): a server and its clients,
    # or a resumed run, would disagree on names if params were named by Keras paths
    first, second = seed_model(3), seed_model(3)
    assert [v.path for v in first.weights] != [v.path for v in second.weights]
    assert keras_params(first).spec == keras_params(second).spec
    trainer = KerasTrainer(second, "regression")
    trainer._load(keras_params(first))  # a model built earlier loads into a later one
    np.testing.assert_array_equal(second.get_weights()[0], first.get_weights()[0])
    wide = keras.Sequential([keras.Input((2,)), *(keras.layers.Dense(2) for _ in range(6))])
    assert list(keras_params(wide))[:3] == ["00/kernel", "01/bias", "02/kernel"]


def test_keras_refuses_what_needs_the_torch_adapter():
    data = federate("diabetes", 2, "iid", np.random.default_rng(0))
    model = seed_model(data.num_features)
    trainer = KerasTrainer(model, "regression")
    client = next(iter(data.clients.values()))
    with pytest.raises(
        ConfigError, match=r"proximal_mu=0\.1 is invalid: expected 0 with the Keras"
    ):
        trainer.fit(keras_params(model), FitTask("a", 1, FitConfig(proximal_mu=0.1)), client)
    with pytest.raises(ConfigError, match="payload='gradient' is invalid"):
        trainer.fit(keras_params(model), FitTask("a", 1, FitConfig(payload="gradient")), client)
