"""The seed's Keras example trained federated: Dense(10, relu) then Dense(1) on sklearn's
diabetes data, split over 10 clients, FedAvg through the Keras 3 adapter (torch backend).

    pip install "fedstream[keras]"
    python examples/keras_diabetes.py
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras
import numpy as np

from fedstream import FedAvg, InProcessTransport, RoundConfig, ServerState, run_rounds
from fedstream.client.keras_trainer import KerasTrainer, keras_params
from fedstream.data import federate

data = federate("diabetes", 10, "iid", np.random.default_rng(0))
keras.utils.set_random_seed(0)  # Keras draws its initial weights from its own generator
model = keras.Sequential(
    [
        keras.Input((data.num_features,)),
        keras.layers.Dense(10, activation="relu"),
        keras.layers.Dense(1),
    ]
)
trainer = KerasTrainer(model, "regression")
transport = InProcessTransport(data.clients, trainer)
start = ServerState.initial(keras_params(model), seed=0)
config = RoundConfig(clients_per_round=10, local_epochs=2, batch_size=16, lr=0.002)
for _, report in run_rounds(start, FedAvg(), transport, sorted(data.clients), config, 20):
    print(f"round {report.round:2d}: client-test MSE {report.metrics['fed_loss']:9.1f}")
