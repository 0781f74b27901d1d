"""Your own Keras 3 model, federated: Dense(10, relu) then Dense(1) on sklearn's diabetes
data, ten clinics, FedAvg through the Keras adapter (torch backend).

    pip install "fedstream[keras]"
    python examples/keras_diabetes.py
    fedstream run --model.app examples.keras_diabetes:app --run.rounds 20 \\
        --run.clients-per-round 10 --client.lr 0.002
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported

import keras
import numpy as np
from sklearn.datasets import load_diabetes

import fedstream


def model() -> keras.Model:
    keras.utils.set_random_seed(0)  # Keras draws its initial weights from its own generator
    return keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(10, activation="relu"), keras.layers.Dense(1)]
    )


x, y = load_diabetes(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
rows = np.array_split(np.random.default_rng(0).permutation(len(x)), 10)
clinics = {
    f"clinic-{k}": ((x[r[:-8]], y[r[:-8]]), (x[r[-8:]], y[r[-8:]])) for k, r in enumerate(rows)
}
app = fedstream.App(model=model, data=clinics, task="regression", name="diabetes-keras")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    result = fedstream.simulate(
        app=app,
        run={"rounds": args.rounds, "clients_per_round": 10},
        client={"local_epochs": 2, "batch_size": 16, "lr": 0.002},
    )
    for report in result.reports:
        print(f"round {report.round:2d}: client-test MSE {report.metrics['fed_loss']:9.1f}")
