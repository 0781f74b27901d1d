"""Your own training loop and evaluation, with a torch Dataset per client, federated.

Each of eight clients holds a ``TensorDataset`` of sklearn's breast-cancer rows. Training
is the user's own loop: AdamW, label smoothing and a cosine schedule, written as one would
without federated learning; evaluation reports the user's own metric (balanced accuracy)
beside the loss. fedstream only needs the loop to train the module it is given in place and
return its metrics.

    python examples/own_training_loop.py
    fedstream run --model.app examples.own_training_loop:app --run.rounds 20 \\
        --run.clients-per-round 4 --client.lr 0.01
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fedstream
from fedstream.data import ClientData
from fedstream.types import FitConfig


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(30, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 2))


def train(
    module: nn.Module, data: ClientData, config: FitConfig, rng: np.random.Generator
) -> Mapping[str, float]:
    """Local training, the user's way. ``rng`` is seeded by the task: use it (or torch's
    generator, which fedstream also seeds) for anything random, so runs are reproducible."""
    dataset = TensorDataset(torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=1e-4)
    steps = config.local_epochs * len(loader)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    total = 0.0
    for _ in range(config.local_epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(module(x), y)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
    return {"loss": total / steps}


def evaluate(module: nn.Module, data: ClientData) -> tuple[int, Mapping[str, float]]:
    """The user's own evaluation: loss, and balanced accuracy (the mean recall per class)."""
    with torch.no_grad():
        logits = module(torch.from_numpy(data.x_test))
    y = torch.from_numpy(data.y_test)
    predicted = logits.argmax(1)
    recalls = [(predicted[y == c] == c).float().mean().item() for c in y.unique()]
    loss = nn.functional.cross_entropy(logits, y).item()
    return data.num_test, {"loss": loss, "balanced_accuracy": float(np.mean(recalls))}


def client_datasets() -> dict[str, tuple[TensorDataset, TensorDataset]]:
    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    rows = np.array_split(np.random.default_rng(1).permutation(len(x)), 8)

    def tensors(index: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy(x[index]), torch.from_numpy(y[index]))

    return {f"clinic-{k}": (tensors(r[:-12]), tensors(r[-12:])) for k, r in enumerate(rows)}


app = fedstream.App(
    model=model, data=client_datasets(), train=train, evaluate=evaluate, name="breast-cancer"
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    result = fedstream.simulate(
        app=app,
        run={"rounds": args.rounds, "clients_per_round": 4},
        client={"local_epochs": 2, "batch_size": 16, "lr": 0.01},
        output_dir="runs/own-training-loop",
        overwrite=True,  # a rerun replaces the last one's outputs
        progress=True,
    )
    print(f"balanced accuracy {result.final_metrics['fed_balanced_accuracy']:.3f}")
