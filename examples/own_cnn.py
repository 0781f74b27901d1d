"""Your own PyTorch CNN, with BatchNorm and Dropout, on your own arrays, federated.

Nine sites each hold a share of sklearn's 8×8 digits (as a hospital holds its own scans);
a tenth share is the server's held-out set. The model is an ordinary ``nn.Module``.

    python examples/own_cnn.py            # 15 rounds, results in runs/own-cnn
    fedstream run --model.app examples.own_cnn:app --run.rounds 15 --run.clients-per-round 5

Batch norm's running statistics are averaged with the weights (its counter stays on each
site); ``--model.local-batchnorm true`` keeps them, and the layers' weights, per site (FedBN).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import fedstream


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(32 * 2 * 2, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def site_data() -> tuple[dict[str, tuple], tuple[np.ndarray, np.ndarray]]:
    """Each site's (train, test) arrays, and the server's held-out set."""
    x, y = load_digits(return_X_y=True)
    images = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    shares = np.array_split(np.random.default_rng(0).permutation(len(images)), 10)
    sites = {}
    for k, rows in enumerate(shares[:-1]):
        train, test = rows[:-30], rows[-30:]
        sites[f"site-{k}"] = ((images[train], y[train]), (images[test], y[test]))
    heldout = shares[-1]
    return sites, (images[heldout], y[heldout])


sites, heldout = site_data()
app = fedstream.App(model=DigitsCNN, data=sites, heldout=heldout, name="digits-cnn")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    result = fedstream.simulate(
        app=app,
        run={"rounds": args.rounds, "clients_per_round": 5},
        client={"local_epochs": 2, "batch_size": 16, "lr": 0.1},
        output_dir="runs/own-cnn",
        overwrite=True,  # a rerun replaces the last one's outputs
        progress=True,
    )
    print(f"held-out accuracy {result.final_metrics['central_accuracy']:.3f}; {result.trainer}")
