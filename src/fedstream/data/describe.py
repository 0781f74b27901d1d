"""What a federated split looks like: sizes, label spread, and a heatmap of clients × classes
(classification) or clients × target ranges (regression)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedstream.data.base import FederatedDataset, train_sizes


def class_counts(dataset: FederatedDataset) -> npt.NDArray[np.int64]:
    """Training examples of each class held by each client, shape (clients, classes)."""
    counts = np.zeros((len(dataset.clients), dataset.num_outputs), dtype=np.int64)
    for row, data in enumerate(dataset.clients.values()):
        counts[row] = np.bincount(data.y_train, minlength=dataset.num_outputs)
    return counts


TARGET_BINS = 10


def target_counts(
    dataset: FederatedDataset, bins: int = TARGET_BINS
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Regression: training examples of each client in each of ``bins`` equal target ranges
    over all clients' targets, shape (clients, bins), and the ranges' edges, (bins + 1,)."""
    every = np.concatenate([data.y_train for data in dataset.clients.values()])
    edges = np.histogram_bin_edges(every, bins=bins)
    counts = np.stack(
        [np.histogram(data.y_train, bins=edges)[0] for data in dataset.clients.values()]
    )
    return counts.astype(np.int64), edges


def summary(dataset: FederatedDataset) -> dict[str, Any]:
    """Sizes and spread of the split, plus label spread for classification."""
    out = dataset.describe()
    sizes = train_sizes(dataset.clients)
    out["client_train_p10"] = float(np.percentile(sizes, 10))
    out["client_train_p90"] = float(np.percentile(sizes, 90))
    out["client_test_examples"] = int(sum(c.num_test for c in dataset.clients.values()))
    if dataset.task == "classification":
        present = (class_counts(dataset) > 0).sum(axis=1)
        out["classes"] = dataset.num_outputs
        out["classes_per_client_mean"] = float(present.mean())
        out["classes_per_client_min"] = int(present.min())
    else:
        means = [float(np.mean(c.y_train)) for c in dataset.clients.values() if c.num_train]
        out["client_target_mean_min"] = min(means)
        out["client_target_mean_max"] = max(means)
    return out


def plot_heatmap(dataset: FederatedDataset, path: Path, title: str) -> None:
    """Clients (rows, largest first) × classes or target ranges (columns), coloured by
    example count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if dataset.task == "classification":
        counts, column = class_counts(dataset), "class"
    else:
        counts, edges = target_counts(dataset)
        column = f"target, {len(edges) - 1} equal ranges from {edges[0]:.4g} to {edges[-1]:.4g}"
    order = np.argsort(-counts.sum(axis=1), kind="stable")
    height = min(12.0, 2.0 + 0.08 * len(order))
    figure, axis = plt.subplots(figsize=(8, height), dpi=110)
    image = axis.imshow(counts[order], aspect="auto", interpolation="nearest", cmap="viridis")
    axis.set_xlabel(column)
    axis.set_ylabel(f"client (sorted by size, {len(order)} in all)")
    axis.set_title(title)
    figure.colorbar(image, ax=axis, label="training examples")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
