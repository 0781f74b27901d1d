"""The compute floor for vectorised cohorts: the same FedAvg rounds as a bare batched loop.

    python benchmarks/perf/floor_loop.py WORKLOAD.npz

reads an exported workload (``workloads.export``) and trains each round's clients all at
once, as fedstream's vectorised trainer does, but with nothing else: each round's
clients' shuffled batches are gathered and padded into one (clients, steps, batch,
features) tensor, the stacked MLP or softmax regression runs as
hand-written batched matmuls (``torch.baddbmm``), one backward pass of the summed masked
losses gives every client its gradient, and the deltas are summed once in float64,
weighted by examples. No wire format, no validation, no per-update objects: what is left
is the arithmetic, which is the limit for vectorised cohorts on this machine. Prints one
JSON line: wall time of the rounds, ``arithmetic_s`` (the same less the shuffling and
padding, which a round cannot skip: its seeds exist only once it is planned), client
updates, final accuracy.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from workloads import accuracy, build_module, hyperparameters, load

from fedstream.client.shuffles import epoch_shuffles


def padded_round(
    x: torch.Tensor,
    y: torch.Tensor,
    offsets: np.ndarray,
    chosen: np.ndarray,
    seeds: np.ndarray,
    epochs: int,
    batch: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every chosen client's batches, in the order its own shuffles give them (a fresh
    ``default_rng(seed)`` permutation each epoch, drawn in bulk by fedstream's
    ``client.shuffles``, the fastest exact way known), padded to the longest client:
    x (K, S, B, F), y (K, S, B), mask (K, S, B), and each client's example count (K,)."""
    sizes = [int(offsets[c + 1] - offsets[c]) for c in chosen]
    shuffles = epoch_shuffles([int(s) for s in seeds], sizes, epochs)
    steps = max(epochs * -(-n // batch) for n in sizes)
    slots = np.full((len(chosen), steps * batch), -1, dtype=np.int64)
    for k, (client, n, orders) in enumerate(zip(chosen, sizes, shuffles, strict=True)):
        span = -(-n // batch) * batch  # an epoch's slots: its last batch padded
        for epoch, order in enumerate(orders):
            slots[k, epoch * span : epoch * span + n] = order + int(offsets[client])
    rows = torch.from_numpy(slots.reshape(len(chosen), steps, batch))
    mask = (rows >= 0).to(x.dtype)
    rows = rows.clamp(min=0)
    return x[rows], y[rows], mask, torch.tensor(sizes, dtype=torch.float64)


def forward(weights: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The stacked MLP (or softmax regression): weights alternate (K, out, in) and
    (K, out); x is (K, B, F); ReLU between layers."""
    layers = len(weights) // 2
    h = x
    for i in range(layers):
        w, b = weights[2 * i], weights[2 * i + 1]
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if i < layers - 1:
            h = torch.relu(h)
    return h


def main() -> None:
    torch.set_num_threads(1)
    spec = load(Path(sys.argv[1]))
    epochs, batch, lr = hyperparameters(spec)
    x, y, offsets = torch.from_numpy(spec["x"]), torch.from_numpy(spec["y"]), spec["offsets"]
    global_weights = [torch.from_numpy(w).clone() for w in spec["weights"]]
    started = time.perf_counter()
    updates, preparing = 0, 0.0
    for chosen, seeds in zip(spec["chosen"], spec["seeds"], strict=True):
        cohort, before = len(chosen), time.perf_counter()
        xs, ys, masks, sizes = padded_round(x, y, offsets, chosen, seeds, epochs, batch)
        preparing += time.perf_counter() - before
        weights = [g.unsqueeze(0).repeat(cohort, *[1] * g.dim()) for g in global_weights]
        for step in range(xs.shape[1]):
            leaves = [w.requires_grad_(True) for w in weights]
            logits = forward(leaves, xs[:, step])
            losses = F.cross_entropy(logits.flatten(0, 1), ys[:, step].flatten(), reduction="none")
            mask = masks[:, step]
            per_client = (losses.view(mask.shape) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            grads = torch.autograd.grad(per_client.sum(), leaves)
            with torch.no_grad():
                weights = [w.detach() - lr * g for w, g in zip(leaves, grads, strict=True)]
        share = sizes / sizes.sum()
        for g, w in zip(global_weights, weights, strict=True):
            delta = (w - g.unsqueeze(0)).double()
            g += torch.tensordot(share, delta, dims=1).to(g.dtype)
        updates += cohort
    module = build_module(spec)
    with torch.no_grad():
        for parameter, value in zip(module.parameters(), global_weights, strict=True):
            parameter.copy_(value)
    final = accuracy(module, spec)
    wall = time.perf_counter() - started
    figures = {"wall_s": wall, "arithmetic_s": wall - preparing, "client_updates": updates}
    print(json.dumps(figures | {"final_accuracy": final}))


if __name__ == "__main__":
    main()
