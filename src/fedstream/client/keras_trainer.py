"""Keras 3 adapter: train a Keras model federated, on Keras's torch backend.

Install with ``pip install "fedstream[keras]"``. The backend must be torch: this module
sets ``KERAS_BACKEND=torch`` unless Keras was already imported with another backend, which
is an error. Parameters are named by their position among the model's weights and their
own name (``0/kernel``, ``1/bias``), not by Keras's variable paths, whose layer names
(``sequential_2/dense_4``) count the models built before in the process. Local training
is Keras's own ``fit`` with plain SGD, one call per epoch on a permutation drawn from the
task's seed, so batches are the same as the PyTorch adapter's. FedProx's proximal term
and FedSGD's gradient payload need the PyTorch adapter and are refused here with an error
that says so.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from fedstream.client.base import FitTask
from fedstream.client.torch_trainer import evaluation_metrics
from fedstream.data.base import ClientData, Task
from fedstream.errors import ConfigError
from fedstream.params import Params
from fedstream.types import ClientUpdate, EvaluateResult

os.environ.setdefault("KERAS_BACKEND", "torch")
import keras

if keras.backend.backend() != "torch":
    raise ConfigError(
        "KERAS_BACKEND", keras.backend.backend(), "'torch' (set it before importing keras)"
    )


def keras_params(model: Any) -> Params:
    """The model's weights as ``Params``, named ``<position>/<variable name>`` with the
    position zero-padded to one width, so the same architecture gets the same names in any
    process, whatever was built before it."""
    weights = model.weights
    width = len(str(max(len(weights) - 1, 0)))
    return Params(
        {
            f"{i:0{width}d}/{v.name}": np.array(w)
            for i, (v, w) in enumerate(zip(weights, model.get_weights(), strict=True))
        }
    )


class KerasTrainer:
    """A ``Trainer`` for a built Keras 3 model (its input shape known)."""

    def __init__(self, model: Any, task: Task) -> None:
        self.model = model
        self.task: Task = task
        self.layout = keras_params(model)
        self._compiled_lr: float | None = None

    def _load(self, params: Params) -> None:
        if params.spec != self.layout.spec:
            self.layout.check_compatible(params, "model params")
        self.model.set_weights([np.asarray(params[name]) for name in self.layout])

    def _compile(self, lr: float) -> None:
        if self._compiled_lr != lr:
            loss = "sparse_categorical_crossentropy" if self.task == "classification" else "mse"
            self.model.compile(
                optimizer=keras.optimizers.SGD(learning_rate=lr),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
                if loss != "mse"
                else "mse",
            )
            self._compiled_lr = lr

    def fit(self, params: Params, task: FitTask, data: ClientData) -> ClientUpdate:
        config = task.config
        if config.proximal_mu > 0:
            raise ConfigError(
                "proximal_mu",
                config.proximal_mu,
                "0 with the Keras adapter (FedProx needs fedstream.TorchTrainer)",
            )
        if config.payload != "delta":
            raise ConfigError(
                "payload",
                config.payload,
                "'delta' with the Keras adapter (FedSGD needs fedstream.TorchTrainer)",
            )
        if config.masked:
            raise ConfigError(
                "prune_fraction",
                "> 0",
                "0 with the Keras adapter (pruned training needs fedstream.TorchTrainer)",
            )
        if config.algorithm != "sgd":
            raise ConfigError(
                "algorithm",
                config.algorithm,
                "'sgd' with the Keras adapter (SCAFFOLD needs fedstream.TorchTrainer)",
            )
        if config.sample_dp is not None:
            raise ConfigError(
                "dp",
                "sample",
                "'client' or 'local' with the Keras adapter (DP-SGD needs fedstream.TorchTrainer)",
            )
        if data.num_train == 0:
            raise ValueError(f"client {task.client_id!r} has no training examples")
        self._load(params)
        self._compile(config.lr)
        rng = np.random.default_rng(config.seed)
        losses = []
        for _ in range(config.local_epochs):
            order = rng.permutation(data.num_train)
            history = self.model.fit(
                data.x_train[order],
                data.y_train[order],
                batch_size=config.batch_size or None,
                epochs=1,
                shuffle=False,
                verbose=0,
            )
            losses.append(float(history.history["loss"][-1]))
        trained = keras_params(self.model)
        delta = Params({n: trained[n] - params[n] for n in self.layout})
        return ClientUpdate(
            task.client_id,
            task.round,
            delta,
            float(data.num_train),
            {"loss": float(np.mean(losses))},
        )

    def evaluate(
        self, params: Params, client_id: str, round_number: int, data: ClientData
    ) -> EvaluateResult:
        self._load(params)
        if data.num_test == 0:
            return EvaluateResult(client_id, round_number, 0, {})
        outputs = self.model.predict(data.x_test, verbose=0, batch_size=max(data.num_test, 1))
        metrics = evaluation_metrics(
            self.task, torch.as_tensor(np.asarray(outputs)), torch.from_numpy(data.y_test)
        )
        return EvaluateResult(client_id, round_number, data.num_test, metrics)
