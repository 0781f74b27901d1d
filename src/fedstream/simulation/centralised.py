"""The centralised baseline: the same model and SGD on all clients' training data pooled.

Federated results are judged against it: it is what training could reach if the data
could be moved, with the same learning rate and batch size.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedstream.client.base import FitTask
from fedstream.client.torch_trainer import TorchTrainer
from fedstream.data.base import ClientData
from fedstream.simulation.config import SimulationConfig
from fedstream.simulation.engine import build, torch_threads
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
