"""The simulation workloads of the performance comparison, and their export.

- default: ``fedstream run``'s own job (digits, 100 clients, Dirichlet 0.5, MLP 64-64-10,
  20 per round, 5 local epochs, batch 10, lr 0.3, FedAvg, 30 rounds).
- W1 digits: 100 clients (Dirichlet 0.5), 20 per round, MLP 64-64-10, 1 local epoch,
  batch 10, SGD lr 0.05, FedAvg, 30 rounds.
- W2 cross-device: Synthetic(1, 1) with 20 examples per client (a tenth of all examples
  is held out for the server), 1,000 clients, 100 per round, softmax regression, 1 local
  epoch, batch 10, lr 0.01, 10 rounds.
- W3: W2 with 10,000 clients and 1,000 per round.
- W4 CNN: digits as 8×8 images, 100 clients (Dirichlet 0.5), 20 per round, the CNN with
  BatchNorm and Dropout (``cnn_bn``), 2 local epochs, batch 16, lr 0.05, 30 rounds.

Every contender trains the same clients with the same data, initial weights, sampled
clients and shuffles. fedstream builds them from the config; the others read them from
the ``.npz`` that :func:`export` writes, which holds every client's training rows, the
held-out set, the initial weights (in module order), and each round's sampled clients
and shuffle seeds exactly as fedstream's round loop draws them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CLIENT = {"local_epochs": 1, "batch_size": 10, "lr": 0.05}
SYNTHETIC = {
    "dataset": "synthetic", "synthetic_samples": 20, "heldout_fraction": 0.1,
    "client_test_fraction": 0.0,
}  # fmt: skip
WORKLOADS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "W1": {
        "data": {"dataset": "digits", "num_clients": 100, "alpha": 0.5},
        "model": {"name": "mlp"},
        "client": CLIENT,
        "run": {"clients_per_round": 20, "rounds": 30},
    },
    "W2": {
        "data": {**SYNTHETIC, "num_clients": 1_000},
        "model": {"name": "linear"},
        "client": {**CLIENT, "lr": 0.01},
        "run": {"clients_per_round": 100, "rounds": 10},
    },
    "W3": {
        "data": {**SYNTHETIC, "num_clients": 10_000},
        "model": {"name": "linear"},
        "client": {**CLIENT, "lr": 0.01},
        "run": {"clients_per_round": 1_000, "rounds": 10},
    },
    "W4": {
        "data": {"dataset": "digits", "num_clients": 100, "alpha": 0.5},
        "model": {"name": "cnn_bn"},
        "client": {"local_epochs": 2, "batch_size": 16, "lr": 0.05},
        "run": {"clients_per_round": 20, "rounds": 30},
    },
}
# only the last round evaluates, on the server's held-out set (no federated evaluation)
TIMING = {"run": {"evaluate_every": 0, "evaluate_fraction": 0.0}}


def config(workload: str, **execution: Any) -> Any:
    """The ``SimulationConfig`` of a workload (``execution`` settings pick the trainer,
    executor, …)."""
    from fedstream.simulation.config import from_mapping, merge

    settings = merge(merge(WORKLOADS[workload], TIMING), {"execution": execution})
    return from_mapping(settings)


def export(workload: str, path: Path) -> None:
    """Write the workload's data, initial weights and schedule to ``path`` (``.npz``)."""
    from fedstream.data.base import train_sizes
    from fedstream.simulation import build

    cfg = config(workload)
    setup = build(cfg)
    ids = sorted(setup.dataset.clients)
    clients = [setup.dataset.clients[c] for c in ids]
    sizes = train_sizes({c: d for c, d in zip(ids, clients, strict=True)})
    bit_generator = np.random.PCG64()
    bit_generator.state = dict(setup.initial.rng_state)  # type: ignore[assignment]
    rng = np.random.Generator(bit_generator)
    chosen, seeds = [], []
    per_round = cfg.run.clients_per_round
    for _ in range(cfg.run.rounds):  # as rounds.run_round draws them (FedAvg draws no more)
        chosen.append(rng.choice(len(ids), size=per_round, replace=False))
        seeds.append(rng.integers(0, 2**63 - 1, size=per_round))
    params = setup.initial.params
    weights: dict[str, Any] = {f"weight_{i:02d}": params[name] for i, name in enumerate(params)}
    np.savez(
        path,
        x=np.concatenate([d.x_train for d in clients]),
        y=np.concatenate([d.y_train for d in clients]),
        offsets=np.concatenate([[0], np.cumsum(sizes)]),
        x_heldout=setup.dataset.x_heldout,
        y_heldout=setup.dataset.y_heldout,
        chosen=np.stack(chosen),
        seeds=np.stack(seeds),
        hyper=np.array(
            [cfg.client.local_epochs, cfg.client.batch_size, cfg.client.lr], dtype=np.float64
        ),
        model=np.array(cfg.model.name),
        hidden=np.array([64, 64] if cfg.model.name == "mlp" else [], dtype=np.int64),
        names=np.array(list(params)),
        **weights,
    )


def load(path: Path) -> dict[str, Any]:
    """The exported arrays, plus ``weights`` (the initial weights as a list, in order)."""
    with np.load(path) as data:
        out = {k: data[k] for k in data.files}
    out["weights"] = [out.pop(k) for k in sorted(k for k in out if k.startswith("weight_"))]
    return out


def hyperparameters(spec: dict[str, Any]) -> tuple[int, int, float]:
    """The exported local epochs, batch size and learning rate."""
    epochs, batch, lr = spec["hyper"]
    return int(epochs), int(batch), float(lr)


def build_module(spec: dict[str, Any]) -> Any:
    """The torch module the spec names (``mlp``, ``linear`` or ``cnn_bn``), with its
    initial state (weights and, for the CNN, batch-norm statistics)."""
    features, classes = spec["x"].shape[1], int(spec["weights"][-1].shape[0])
    module: nn.Module
    if str(spec["model"]) == "cnn_bn":
        module = DigitsCNN(classes)
    else:
        widths = [features, *(int(h) for h in spec["hidden"]), classes]
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        module = nn.Sequential(*layers)
    state = {
        str(n): torch.from_numpy(w) for n, w in zip(spec["names"], spec["weights"], strict=True)
    }
    module.load_state_dict(state)
    return module


class DigitsCNN(nn.Module):
    """fedstream's ``cnn_bn`` (``models.DigitsCNN`` with batch norm and dropout 0.25),
    written out again: Flower's venv has no fedstream to import it from."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.dropout = nn.Dropout(0.25)
        self.classifier = nn.Linear(32 * 2 * 2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.features(x.reshape(-1, 1, 8, 8))
        logits: torch.Tensor = self.classifier(self.dropout(maps.flatten(1)))
        return logits


TORCH_STREAM = 0x544F5243
MASK64 = (1 << 64) - 1


def torch_seed(seed: int) -> int:
    """The seed fedstream gives torch's generator for a task with ``seed``
    (``client.torch_trainer.torch_seed``: SplitMix64 of the seed and a stream constant),
    so every contender draws the same dropout masks."""
    z = ((int(seed) ^ TORCH_STREAM) + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return (z ^ (z >> 31)) >> 1


def train_locally(
    module: Any, x: Any, y: Any, seed: int, epochs: int, batch: int, lr: float
) -> None:
    """Plain SGD on one client's tensors, shuffled as fedstream's trainers shuffle (a fresh
    ``default_rng(seed)`` permutation each epoch), mean cross-entropy per batch; dropout
    from torch's generator seeded by ``torch_seed(seed)``, and with batch norm a batch of
    one example skipped, as fedstream's trainers do."""
    import torch.nn.functional as F

    weights = list(module.parameters())
    batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    module.train()
    if any(isinstance(m, nn.Dropout) for m in module.modules()):  # the same masks as fedstream
        torch.default_generator.manual_seed(torch_seed(seed))
    shuffle = np.random.default_rng(seed)
    n = x.shape[0]
    for _ in range(epochs):
        order = torch.from_numpy(shuffle.permutation(n))
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            if batch_norm and len(rows) == 1:
                continue  # batch norm cannot train on one example; fedstream skips it too
            loss = F.cross_entropy(module(x[rows]), y[rows])
            grads = torch.autograd.grad(loss, weights)
            with torch.no_grad():
                for w, g in zip(weights, grads, strict=True):
                    w.add_(g, alpha=-lr)


def accuracy(module: Any, spec: dict[str, Any]) -> float:
    """Accuracy of ``module`` on the exported held-out set."""
    module.eval()
    with torch.no_grad():
        logits = module(torch.from_numpy(spec["x_heldout"]))
    return float((logits.argmax(1).numpy() == spec["y_heldout"]).mean())
