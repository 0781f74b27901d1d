"""An app whose third site's data is broken (NaN features), so its updates are refused
every round with the cause the dashboard must show."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from torch import nn

import fedstream

SITES = [f"site-{k}" for k in range(4)]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x[:800] / 16.0).astype(np.float32), y[:800]


def load_site(site: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    x, y = _digits()
    rows = np.array_split(np.arange(600), len(SITES))[SITES.index(site)]
    features = x[rows].copy()
    if site == "site-2":
        features[:] = np.nan  # a broken sensor
    return (features[:-20], y[rows][:-20]), (x[rows][-20:], y[rows][-20:])


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


app = fedstream.App(
    model=model, data=load_site, client_ids=SITES, heldout=tuple(a[600:] for a in _digits())
)
