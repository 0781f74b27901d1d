"""FedAvg as a plain PyTorch loop, no framework: the floor every framework is measured from.

    python benchmarks/perf/plain_loop.py WORKLOAD.npz

reads an exported workload (``workloads.export``), trains each round's clients one after
another from the global state (weights and batch-norm statistics), averages their deltas
weighted by examples (in float64),
and prints one JSON line: wall time of the rounds, client updates, final accuracy.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from workloads import accuracy, build_module, hyperparameters, load, train_locally


def main() -> None:
    torch.set_num_threads(1)
    spec = load(Path(sys.argv[1]))
    epochs, batch, lr = hyperparameters(spec)
    x, y, offsets = torch.from_numpy(spec["x"]), torch.from_numpy(spec["y"]), spec["offsets"]
    module = build_module(spec)
    state = list(module.state_dict().values())  # weights and buffers, the module's own
    global_state = [t.detach().clone() for t in state]
    started = time.perf_counter()
    updates = 0
    for chosen, seeds in zip(spec["chosen"], spec["seeds"], strict=True):
        sums = [torch.zeros_like(g, dtype=torch.float64) for g in global_state]
        total = 0.0
        for client, seed in zip(chosen, seeds, strict=True):
            rows = slice(int(offsets[client]), int(offsets[client + 1]))
            with torch.no_grad():
                for t, g in zip(state, global_state, strict=True):
                    t.copy_(g)
            train_locally(module, x[rows], y[rows], int(seed), epochs, batch, lr)
            n = rows.stop - rows.start
            with torch.no_grad():
                for s, t, g in zip(sums, state, global_state, strict=True):
                    s += n * (t - g).double()
            total += n
            updates += 1
        for g, s in zip(global_state, sums, strict=True):
            g += (s / total).to(g.dtype)
    with torch.no_grad():
        for t, g in zip(state, global_state, strict=True):
            t.copy_(g)
    final = accuracy(module, spec)
    wall = time.perf_counter() - started
    print(json.dumps({"wall_s": wall, "client_updates": updates, "final_accuracy": final}))


if __name__ == "__main__":
    main()
