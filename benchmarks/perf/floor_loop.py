"""The compute floor for vectorised cohorts: the same FedAvg rounds as a bare batched loop.

    python benchmarks/perf/floor_loop.py WORKLOAD.npz

reads an exported workload (``workloads.export``) and trains each round's clients all at
once, as fedstream's vectorised trainer does, but with nothing else: each round's
clients' shuffled batches are gathered and padded into one (clients, steps, batch,
features) tensor, largest client first, the stacked MLP or softmax regression runs as
hand-written batched matmuls (``torch.baddbmm``) over the clients that still have a batch,
one backward pass of the summed masked losses gives every client its gradient, and the
deltas are summed once in float64, weighted by examples. No wire format, no validation,
no per-update objects: what is left is the arithmetic, which is the limit for vectorised
cohorts on this machine. Prints one
JSON line: wall time of the rounds, ``arithmetic_s`` (the same less the shuffling and
padding, which a round cannot skip: its seeds exist only once it is planned), client
updates, final accuracy.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

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


Rounds = tuple[list[torch.Tensor], int, float]


def matmul_rounds(spec: dict[str, Any], epochs: int, batch: int, lr: float) -> Rounds:
    """The MLP or softmax regression as bare batched matmuls: the final global weights,
    the client updates, and the seconds spent shuffling and padding."""
    x, y, offsets = torch.from_numpy(spec["x"]), torch.from_numpy(spec["y"]), spec["offsets"]
    global_weights = [torch.from_numpy(w).clone() for w in spec["weights"]]
    updates, preparing = 0, 0.0
    for chosen, seeds in zip(spec["chosen"], spec["seeds"], strict=True):
        cohort, before = len(chosen), time.perf_counter()
        # largest first: the clients with a batch left at each step are then a prefix,
        # and a step computes only them (as fedstream's vectorised trainer does)
        order = np.argsort(-(offsets[chosen + 1] - offsets[chosen]), kind="stable")
        chosen, seeds = chosen[order], seeds[order]
        xs, ys, masks, sizes = padded_round(x, y, offsets, chosen, seeds, epochs, batch)
        reach = (masks.sum(2) > 0).sum(0).tolist()
        preparing += time.perf_counter() - before
        weights = [g.unsqueeze(0).repeat(cohort, *[1] * g.dim()) for g in global_weights]
        for step in range(xs.shape[1]):
            k = int(reach[step])
            leaves = [w[:k].detach().requires_grad_(True) for w in weights]
            logits = forward(leaves, xs[:k, step])
            losses = F.cross_entropy(logits.flatten(0, 1), ys[:k, step].flatten(), reduction="none")
            mask = masks[:k, step]
            per_client = (losses.view(mask.shape) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            grads = torch.autograd.grad(per_client.sum(), leaves)
            with torch.no_grad():
                for w, g in zip(weights, grads, strict=True):
                    w[:k] -= lr * g
        share = sizes / sizes.sum()
        for g, w in zip(global_weights, weights, strict=True):
            delta = (w - g.unsqueeze(0)).double()
            g += torch.tensordot(share, delta, dims=1).to(g.dtype)
        updates += cohort
    return global_weights, updates, preparing


def trainer_rounds(spec: dict[str, Any], epochs: int, batch: int, lr: float) -> Rounds:
    """The CNN with batch norm and dropout (W4). Bare ``torch.func`` has no form for batch
    norm's running statistics under ``vmap``, and the per-client dropout masks are
    fedstream's replay (``client.dropout``), so here the floor is fedstream's vectorised
    trainer called directly on each round's cohort with none of the framework around it
    (no transport, wire format, validation or aggregator; one float64 sum). Its own
    per-step and per-client work stays in; ``× floor`` then measures the framework alone."""
    from fedstream.client.base import FitTask
    from fedstream.client.vectorized import VectorizedTrainer
    from fedstream.data.base import ClientData
    from fedstream.params import Params
    from fedstream.types import FitConfig

    trainer = VectorizedTrainer(build_module(spec), "classification")
    names = [str(n) for n in spec["names"]]
    state = dict(zip(names, spec["weights"], strict=True))
    x, y, offsets = spec["x"], spec["y"], spec["offsets"]
    updates, preparing = 0, 0.0
    for number, (chosen, seeds) in enumerate(zip(spec["chosen"], spec["seeds"], strict=True)):
        before = time.perf_counter()
        datasets = [
            ClientData(x[offsets[c] : offsets[c + 1]], y[offsets[c] : offsets[c + 1]], x[:0], y[:0])
            for c in chosen
        ]
        tasks = [
            FitTask(f"{c}", number + 1, FitConfig(epochs, batch, lr, seed=int(seed)))
            for c, seed in zip(chosen, seeds, strict=True)
        ]
        preparing += time.perf_counter() - before
        block = trainer.fit_cohort(Params(state), tasks, datasets)
        share = np.array([d.x_train.shape[0] for d in datasets], dtype=np.float64)
        share /= share.sum()
        state = {
            n: (g + np.tensordot(share, block.payload[n], 1)).astype(g.dtype)
            for n, g in state.items()
        }
        updates += len(block)
    return [torch.from_numpy(np.asarray(state[n])) for n in names], updates, preparing


def main() -> None:
    torch.set_num_threads(1)
    spec = load(Path(sys.argv[1]))
    epochs, batch, lr = hyperparameters(spec)
    rounds = trainer_rounds if str(spec["model"]) == "cnn_bn" else matmul_rounds
    started = time.perf_counter()
    final_state, updates, preparing = rounds(spec, epochs, batch, lr)
    module = build_module(spec)
    names = [str(n) for n in spec["names"]]
    module.load_state_dict(dict(zip(names, final_state, strict=True)))
    final = accuracy(module, spec)
    wall = time.perf_counter() - started
    figures = {"wall_s": wall, "arithmetic_s": wall - preparing, "client_updates": updates}
    print(json.dumps(figures | {"final_accuracy": final}))


if __name__ == "__main__":
    main()
