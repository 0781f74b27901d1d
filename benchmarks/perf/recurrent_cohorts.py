"""Recurrent clients one at a time (torch's fused kernels) against one vectorised cohort
(their layers unrolled, ``client.recurrent``), over layer sizes and sequence lengths.

    python benchmarks/perf/recurrent_cohorts.py [--repeats 3] [--shapes lstm:32:10:50 ...]

A shape is ``kind:hidden:length:clients`` (kind ``lstm``, ``gru`` or ``rnn``, tanh). Each
client holds 20–100 random token sequences (vocabulary 50), and trains one epoch of batch
10 at lr 0.5 on a model of an embedding of 8, the recurrent layer and a linear read-out of the last
step: ``TorchTrainer.fit`` client by client, against ``VectorizedTrainer.fit_cohort`` on
all of them. One torch thread; the two arms alternate over the repeats, and the figure is
the median of the client updates per second. ``max_diff`` is the largest difference
between the two arms' updates (float32 rounding, a check). Prints one JSON line per shape
and a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch import nn

from fedstream.client.base import FitTask
from fedstream.client.torch_trainer import TorchTrainer, params_from_module
from fedstream.client.vectorized import VectorizedTrainer
from fedstream.data.base import ClientData
from fedstream.types import FitConfig

VOCABULARY = 50
SHAPES = (
    "gru:16:20:50", "gru:64:40:20", "gru:256:80:10",
    "lstm:32:10:50", "lstm:32:80:20", "lstm:64:40:20", "lstm:256:80:10",
    "rnn:64:40:20", "rnn:256:80:10",
)  # fmt: skip


class Reader(nn.Module):
    """Embedding 8, one recurrent layer, a linear read-out of the last step's output."""

    def __init__(self, kind: str, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCABULARY, 8)
        layer = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind]
        self.recurrent = layer(8, hidden, batch_first=True)
        self.decoder = nn.Linear(hidden, VOCABULARY)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.recurrent(self.embedding(x.long()))
        logits: torch.Tensor = self.decoder(outputs[:, -1])
        return logits


def clients(length: int, count: int) -> list[ClientData]:
    rng = np.random.default_rng(0)
    sizes = rng.integers(20, 101, count)
    return [
        ClientData(
            rng.integers(0, VOCABULARY, (n, length)).astype(np.uint8),
            rng.integers(0, VOCABULARY, n),
            np.zeros((0, length), np.uint8),
            np.zeros(0, np.int64),
        )
        for n in sizes
    ]


def measure(shape: str, repeats: int) -> dict[str, object]:
    kind, hidden, length, count = shape.split(":")
    torch.manual_seed(0)
    model = Reader(kind, int(hidden))
    start = params_from_module(model)
    data = clients(int(length), int(count))
    tasks = [
        FitTask(f"c{k}", 1, FitConfig(local_epochs=1, batch_size=10, lr=0.5, seed=k))
        for k in range(len(data))
    ]
    sequential = TorchTrainer(model, "classification")
    vectorized = VectorizedTrainer(model, "classification")
    seconds: dict[str, list[float]] = {"sequential": [], "vectorized": []}
    outputs = {}
    for _ in range(repeats):
        began = time.perf_counter()
        pairs = zip(tasks, data, strict=True)
        outputs["sequential"] = [sequential.fit(start, t, d) for t, d in pairs]
        seconds["sequential"].append(time.perf_counter() - began)
        began = time.perf_counter()
        outputs["vectorized"] = vectorized.fit_cohort(start, tasks, data).rows()
        seconds["vectorized"].append(time.perf_counter() - began)
    diff = max(
        float(np.abs(a.payload.flat() - b.payload.flat()).max())
        for a, b in zip(outputs["sequential"], outputs["vectorized"], strict=True)
    )
    rates = {arm: len(tasks) / statistics.median(s) for arm, s in seconds.items()}
    return {
        "shape": shape,
        "sequential_updates_per_s": rates["sequential"],
        "vectorized_updates_per_s": rates["vectorized"],
        "ratio": rates["vectorized"] / rates["sequential"],
        "max_diff": diff,
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for shape in args.shapes:
        row = measure(shape, args.repeats)
        print(json.dumps(row), flush=True)
        rows.append(row)
    header = f"{'kind:hidden:length:clients':<28} {'sequential':>11} {'vectorised':>11}"
    print(f"\n{header} {'ratio':>7}")
    for row in rows:
        print(
            f"{row['shape']:<28} {row['sequential_updates_per_s']:>11.1f} "
            f"{row['vectorized_updates_per_s']:>11.1f} {row['ratio']:>7.2f}"
        )


if __name__ == "__main__":
    main()
