"""The two baselines without federation that federated results are judged against.

- centralised: the same model and SGD on all clients' training data pooled, what training
  could reach if the data could be moved, with the same learning rate and batch size;
- local only: every client trains the initial model on its own data alone, what a client
  gets without joining (the floor personalisation must beat).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from fedstream.client.base import FitTask
from fedstream.client.torch_trainer import TorchTrainer
from fedstream.data.base import ClientData
from fedstream.rounds.evaluate import Evaluation, evaluate_federated
from fedstream.simulation.config import SimulationConfig
from fedstream.simulation.engine import build, round_config, torch_threads
from fedstream.types import FitConfig


def centralised_baseline(config: SimulationConfig, epochs: int) -> Mapping[str, float]:
    """Train ``config``'s model for ``epochs`` over the pooled client training data and
    return its metrics on the held-out set (``loss``, and ``accuracy`` for classification)."""
    with torch_threads(config.execution.threads):
        setup = build(config)
        clients = list(setup.dataset.clients.values())
        pooled = ClientData(
            np.concatenate([c.x_train for c in clients]),
            np.concatenate([c.y_train for c in clients]),
            setup.dataset.x_heldout,
            setup.dataset.y_heldout,
        )
        trainer = TorchTrainer(setup.module, setup.dataset.task)
        fit = FitConfig(
            local_epochs=epochs,
            batch_size=config.client.batch_size,
            lr=config.client.lr,
            seed=config.execution.seed,
        )
        update = trainer.fit(setup.initial.params, FitTask("centralised", 1, fit), pooled)
        trained = setup.initial.params + update.payload
        return trainer.evaluate(trained, "centralised", 1, pooled).metrics


def local_only_baseline(config: SimulationConfig, epochs: int) -> Evaluation:
    """Every client of ``config`` trains the initial model on its own training data for
    ``epochs`` epochs (the run's batch size and learning rate, plain SGD) and tests it on
    its own test split, through the run's own clients, as federated evaluation with
    ``run.personalize_epochs = epochs`` would from the initial model. ``metrics`` has
    ``fed_personal_*``, the example-weighted means (``fed_*`` is the initial model's);
    ``per_client`` has each client's."""
    with torch_threads(config.execution.threads):
        setup = build(config)
        rounds = replace(
            round_config(config, setup),
            evaluate_fraction=1.0,
            personalize_epochs=epochs,
            broadcast="none",
            client_metrics="clear",
        )
        assert setup.transport is not None  # built with the clients' data
        return evaluate_federated(
            setup.initial.params,
            setup.transport,
            sorted(setup.dataset.clients),
            rounds,
            0,
            np.random.default_rng(config.execution.seed),
        )
