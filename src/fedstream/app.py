"""``App``: a federated job made of the user's own model, data and training.

An ``App`` is what every part of fedstream runs: ``fedstream.simulate(app=…)``,
``fedstream run --app package.module:app`` (or ``app = "…"`` under ``[tool.fedstream]``
in the project's ``pyproject.toml``), ``fedstream server``/``client --app …`` for a
deployment, and ``fedstream serve`` for its models. The built-in data sets and models are
apps too (``fedstream.simulation.engine.builtin_app``), so a user's app gets everything
they get: results files and plots, the run store, checkpoints and exact resume, DP, secure
sums, compression, serving and deployment.

The parts:

- ``model``: a function returning a fresh ``nn.Module`` (or a built Keras 3 model). It is
  called with torch's generator seeded from the run's seed, so every process builds the
  same initial weights.
- ``data``: each client's data, as a mapping of client id → data, or a function of the
  client id (then ``client_ids`` lists them); in any form ``fedstream.data.sources`` reads
  (arrays, tensors, a ``Dataset`` or ``DataLoader``, train and test splits). A deployed
  client calls the function for its own id only, so its data never has to exist
  anywhere else.
- ``heldout``: optional data for the server's central evaluation (a split).
- ``task``, and the training parts of ``fedstream.TorchTrainer``: ``loss``, ``metrics``,
  ``optimizer``, ``train``, ``evaluate``, ``device``.
- ``personal``: optionally, which model entries are each client's personal layers
  (FedPer, FedRep), as a predicate on entry names such as ``lambda name:
  name.startswith("classifier.")``; it adds to the modules ``model.personal`` names. The
  server evaluates it and sends the names, so deployed clients need not agree on code.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedstream.client.base import Trainer
from fedstream.client.torch_trainer import (
    EvaluateFunction,
    Loss,
    Metrics,
    OptimizerFactory,
    TorchTrainer,
    TrainFunction,
    check_task,
    params_from_module,
    seeded_torch,
)
from fedstream.data.base import ClientData, Task
from fedstream.data.sources import as_client_data, read_split, read_targets
from fedstream.errors import ConfigError
from fedstream.params import Params

Array = Any


@dataclass(frozen=True)
class App:
    """A user's federated job (module docstring)."""

    model: Callable[[], Any]
    data: Mapping[str, Any] | Callable[[str], Any]
    client_ids: Sequence[str] | None = None
    task: str = "classification"
    heldout: Any | None = None
    loss: Loss | None = None
    metrics: Metrics | None = None
    optimizer: OptimizerFactory | None = None
    train: TrainFunction | None = None
    evaluate: EvaluateFunction | None = None
    device: str = "auto"
    name: str = "app"
    personal: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        check_task(self.task)
        if not callable(self.model):
            raise ConfigError("app.model", self.model, "a function that returns a fresh model")
        if not (isinstance(self.data, Mapping) or callable(self.data)):
            raise ConfigError(
                "app.data", type(self.data).__name__, "a mapping of client id → data, or a function"
            )
        if not isinstance(self.data, Mapping) and not self.client_ids:
            raise ConfigError(
                "app.client_ids", self.client_ids, "the client ids, since data is a function"
            )
        for part in ("loss", "metrics", "optimizer", "train", "evaluate", "personal"):
            value = getattr(self, part)
            if value is not None and not callable(value):
                raise ConfigError(f"app.{part}", value, "a function")

    @property
    def checked_task(self) -> Task:
        return check_task(self.task)

    def ids(self) -> list[str]:
        """Every client id, sorted (the order the round loop samples from)."""
        ids = list(self.client_ids) if self.client_ids else list(self.data)  # type: ignore[arg-type]
        if not ids:
            raise ConfigError("app.data", "no clients", "at least one client")
        if len(set(ids)) != len(ids):
            raise ConfigError("app.client_ids", ids, "distinct client ids")
        return sorted(str(c) for c in ids)

    def client_data(self, client_id: str) -> ClientData:
        """Client ``client_id``'s data, read and checked (an error names the client)."""
        if isinstance(self.data, Mapping):
            if client_id not in self.data:
                raise ConfigError("--id", client_id, f"one of the app's clients {self.ids()[:3]}…")
            source = self.data[client_id]
        else:
            try:
                source = self.data(client_id)
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(
                    f"clients[{client_id!r}]", f"{type(exc).__name__}: {exc}", "data from app.data"
                ) from None
        if source is None:
            raise ConfigError(f"clients[{client_id!r}]", None, "data (app.data gave nothing)")
        return as_client_data(source, self.checked_task, client_id)

    def clients(self) -> AppClients:
        """Every client's data, read on first use and kept."""
        return AppClients(self)

    def heldout_split(self) -> tuple[Array, Array] | None:
        """The server's held-out (x, y), or ``None``."""
        if self.heldout is None:
            return None
        x, y = read_split(self.heldout, "app.heldout")
        return x, read_targets(y, self.checked_task, x, "app.heldout")

    def build_model(self, seed: int) -> Any:
        """A fresh model, its initial weights drawn from ``seed`` (torch's global generator
        is restored afterwards)."""
        with seeded_torch(seed):
            module = self.model()
        if module is None:
            raise ConfigError("app.model", None, "a function that returns the model")
        return module

    @property
    def custom_training(self) -> bool:
        """Whether the app replaces part of the standard training (then only the one-at-a-
        time trainer can run it)."""
        parts = (self.loss, self.optimizer, self.train, self.evaluate, self.metrics)
        return any(p is not None for p in parts) or self.device not in ("auto", "cpu")

    def trainer(self, module: Any) -> Trainer:
        """The one-at-a-time trainer for ``module``: the app's parts on ``TorchTrainer``,
        or the Keras adapter for a Keras model."""
        if not is_torch(module):
            return _keras_trainer(self, module)
        return TorchTrainer(
            module,
            self.task,
            loss=self.loss,
            metrics=self.metrics,
            optimizer=self.optimizer,
            train=self.train,
            evaluate=self.evaluate,
            device=self.device,
        )


def is_keras(model: Any) -> bool:
    """Whether ``model`` is a Keras model (on Keras's torch backend it is also an
    ``nn.Module``, but Keras, not torch, owns its weights and training)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, keras.Model)


def is_torch(model: Any) -> bool:
    return isinstance(model, torch.nn.Module) and not is_keras(model)


def model_params(module: Any) -> Params:
    """A model's state as ``Params``: a torch module's state dict, or a Keras model's
    weights by variable path."""
    if is_torch(module):
        return params_from_module(module)
    from fedstream.client.keras_trainer import keras_params

    return keras_params(module)


def _keras_trainer(app: App, model: Any) -> Trainer:
    custom = [p for p in ("loss", "optimizer", "train", "evaluate", "metrics") if getattr(app, p)]
    if custom:
        raise ConfigError(
            f"app.{custom[0]}", "given", "none with a Keras model (Keras trains with its own fit)"
        )
    from fedstream.client.keras_trainer import KerasTrainer

    return KerasTrainer(model, app.checked_task)


class AppClients(Mapping[str, ClientData]):
    """An app's clients as a mapping: each client's data is read on first use, then kept
    (a client is never rebuilt for every message)."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._ids = app.ids()
        self._known = set(self._ids)
        self._read: dict[str, ClientData] = {}

    def __getitem__(self, client_id: str) -> ClientData:
        if client_id not in self._known:
            raise KeyError(client_id)
        data = self._read.get(client_id)
        if data is None:
            data = self._read[client_id] = self._app.client_data(client_id)
        return data

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._known


def load_app(path: str) -> App:
    """The ``App`` at ``"package.module:attribute"`` (the current folder is importable, as
    for ``python -m``); the attribute may be an ``App`` or a function returning one."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError("app", path, "'package.module:attribute'")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError("app", path, f"an importable module ({exc})") from None
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise ConfigError("app", path, f"an attribute {attribute!r} of {module_name}") from None
    if not isinstance(value, App) and callable(value):
        value = value()
    if not isinstance(value, App):
        raise ConfigError("app", path, f"a fedstream.App (got {type(value).__name__})")
    return value


def check_model_fits(module: Any, app: App, clients: Mapping[str, ClientData]) -> None:
    """Before round 1: the model's output must fit every client's targets under the
    standard loss. A classifier needs (n, C) logits with C above every label; a
    regressor (n,) or (n, 1). The first client it does not fit is named."""
    if app.loss is not None or app.train is not None or not is_torch(module):
        return
    first = next(iter(clients))
    data = clients[first]
    with seeded_torch(0), torch.no_grad():
        was_training = module.training
        module.eval()
        try:
            outputs = module(torch.from_numpy(np.ascontiguousarray(data.x_train[:2])))
        except Exception as exc:
            raise ConfigError(
                "app.model",
                f"{type(exc).__name__}: {exc}",
                f"a model that takes the inputs of client {first!r}, of shape "
                f"{tuple(data.x_train.shape[1:])}",
            ) from None
        finally:
            module.train(was_training)
    shape = tuple(outputs.shape)
    if app.checked_task == "regression":
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise ConfigError(
                "app.model", f"outputs of shape {shape}", "(n,) or (n, 1) for regression"
            )
        return
    if len(shape) != 2:
        raise ConfigError("app.model", f"outputs of shape {shape}", "(n, classes) logits")
    for client_id, client in clients.items():
        largest = int(client.y_train.max()) if client.num_train else -1
        if client.num_test:
            largest = max(largest, int(client.y_test.max()))
        if largest >= shape[1] or (client.num_train and int(client.y_train.min()) < 0):
            raise ConfigError(
                f"clients[{client_id!r}].y",
                f"labels up to {largest}",
                f"labels in [0, {shape[1]}), the model's {shape[1]} outputs",
            )
