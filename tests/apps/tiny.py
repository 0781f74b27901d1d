"""Small apps of a user's own, for tests: a CNN with batch norm and dropout on digits."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fedstream


class SmallCNN(nn.Module):
    """conv ▸ batch norm ▸ ReLU ▸ pool ▸ dropout ▸ linear, on 1×8×8 images."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 4 * 4, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def digits(count: int = 300) -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x[:count] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), y[:count]


def sites(count: int = 5) -> dict[str, object]:
    """Five sites, each holding its data in another of the forms people use."""
    x, y = digits()
    rows = np.array_split(np.arange(len(x)), count)
    tensors = lambda r: (torch.from_numpy(x[r]), torch.from_numpy(y[r]))  # noqa: E731
    forms = [
        lambda r: ((x[r[:-10]], y[r[:-10]]), (x[r[-10:]], y[r[-10:]])),  # arrays
        lambda r: (tensors(r[:-10]), tensors(r[-10:])),  # tensors
        lambda r: (TensorDataset(*tensors(r[:-10])), TensorDataset(*tensors(r[-10:]))),
        lambda r: {"train": DataLoader(TensorDataset(*tensors(r[:-10])), batch_size=7)},
        lambda r: (x[r], y[r]),  # a training split alone
    ]
    return {f"site-{k}": forms[k % len(forms)](r) for k, r in enumerate(rows)}


def heldout() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return (x[-100:] / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), y[-100:]


app = fedstream.App(model=SmallCNN, data=sites(), heldout=heldout(), name="tiny-cnn")


def site_from_disk(client_id: str) -> object:
    """What a deployed client's data function looks like: it reads only its own share."""
    return sites()[client_id]


by_function = fedstream.App(
    model=SmallCNN, data=site_from_disk, client_ids=[f"site-{k}" for k in range(5)],
    heldout=heldout(), name="tiny-cnn",
)  # fmt: skip
