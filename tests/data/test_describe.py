"""``fedstream data describe``'s numbers: class counts for classification, target ranges for
regression, and each data set's default partition."""

import numpy as np
import pytest

import fedstream
from fedstream.data import federate
from fedstream.data.datasets import DATASETS, NATURAL_ONLY, REGRESSION, SOURCES
from fedstream.data.describe import class_counts, plot_heatmap, summary, target_counts
from tests.settings import make_config, nested


def test_the_regression_list_is_every_source_with_numeric_targets():
    tasks = {
        name: make(rng=np.random.default_rng(0), num_clients=4).task
        for name, make in SOURCES.items()
        if name not in NATURAL_ONLY
    }
    assert sorted(REGRESSION) == sorted(
        name for name, task in tasks.items() if task == "regression"
    )


@pytest.mark.parametrize(
    ("dataset", "split"),
    [("diabetes", "iid"), ("digits", "dirichlet"), ("wine", "dirichlet"), ("synthetic", "natural")],
)
def test_each_data_set_defaults_to_a_partition_it_supports(dataset, split):
    assert dataset in DATASETS
    assert make_config(dataset=dataset, num_clients=10, clients_per_round=5).data.split == split


def test_regression_targets_are_counted_in_equal_ranges():
    data = federate("diabetes", 10, "iid", np.random.default_rng(0))
    counts, edges = target_counts(data)
    every = np.concatenate([c.y_train for c in data.clients.values()])
    assert counts.shape == (10, 10) and edges.shape == (11,)
    assert (edges[0], edges[-1]) == (every.min(), every.max())
    assert counts.sum(axis=1).tolist() == [c.num_train for c in data.clients.values()]
    first = next(iter(data.clients.values())).y_train
    assert counts[0].tolist() == np.histogram(first, bins=edges)[0].tolist()
    facts = summary(data)
    means = [c.y_train.mean() for c in data.clients.values()]
    assert facts["client_target_mean_min"] == pytest.approx(min(means), rel=1e-12)
    assert facts["client_target_mean_max"] == pytest.approx(max(means), rel=1e-12)
    assert "classes" not in facts


def test_classification_counts_each_class_of_each_client():
    data = federate("wine", 4, "iid", np.random.default_rng(0))
    counts = class_counts(data)
    assert counts.shape == (4, 3)
    for row, client in zip(counts, data.clients.values(), strict=True):
        assert row.tolist() == [int((client.y_train == k).sum()) for k in range(3)]


@pytest.mark.parametrize("dataset", ["diabetes", "wine"])
def test_the_heatmap_is_drawn_for_either_task(tmp_path, dataset):
    data = federate(dataset, 6, "iid", np.random.default_rng(0))
    plot_heatmap(data, tmp_path / "map.png", dataset)
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_on_a_regression_data_set_needs_no_partition_setting():
    settings = nested(dataset="diabetes", num_clients=10, clients_per_round=5, rounds=2)
    result = fedstream.simulate(**settings)
    assert result.config.data.split == "iid"
    assert "central_loss" in result.final_metrics and "central_accuracy" not in result.final_metrics
