"""The baselines without federation: local-only training, by each client on its own."""

import numpy as np
import pytest

from fedstream import FitConfig, FitTask
from fedstream.simulation import build, local_only_baseline
from tests.settings import make_config

TWO_CLASSES = {"partition": "shards", "num_clients": 20, "lr": 0.1}


def test_local_only_trains_each_client_alone_from_the_initial_model():
    config = make_config(**TWO_CLASSES)
    found = local_only_baseline(config, epochs=5)
    assert len(found.per_client) == 20
    # with two classes per client, a model of its own fits each client well
    assert found.metrics["fed_personal_accuracy"] == pytest.approx(0.8107, abs=1e-4)
    assert found.metrics["fed_accuracy"] < 0.2  # the untrained initial model
    # one client by hand: the trainer's own SGD for 5 epochs from the initial model
    setup = build(config)
    data = setup.dataset.clients["client-07"]
    task = FitTask("client-07", 0, FitConfig(local_epochs=5, batch_size=10, lr=0.1, seed=0))
    trained = setup.initial.params + setup.trainer.fit(setup.initial.params, task, data).payload
    alone = setup.trainer.evaluate(trained, "client-07", 0, data).metrics
    assert found.per_client["client-07"]["personal_accuracy"] == alone["accuracy"]
    # and the weighted mean is over every client's test examples
    sizes = {c: d.num_test for c, d in setup.dataset.clients.items()}
    mean = sum(sizes[c] * m["personal_accuracy"] for c, m in found.per_client.items()) / sum(
        sizes.values()
    )
    assert found.metrics["fed_personal_accuracy"] == pytest.approx(mean, rel=1e-12)


def test_more_local_epochs_fit_the_clients_own_data_better():
    config = make_config(**TWO_CLASSES)
    one, many = (local_only_baseline(config, e).metrics for e in (1, 10))
    assert many["fed_personal_loss"] < one["fed_personal_loss"]
    assert np.isfinite(many["fed_personal_loss"])
