"""The default workload timed against the same FedAvg arithmetic as a plain PyTorch loop.

Workload: sklearn digits, 100 clients with Dirichlet(0.5) label skew, MLP 64-64-10,
FedAvg, 30 rounds of 20 clients, 5 local epochs, batch 10, lr 0.3 (``fedstream run``'s
defaults), evaluated once at the end.

Contenders, each in a fresh process so its peak RSS is its own:
- ``plain``: a hand-written PyTorch loop, no framework: same data, same initial weights,
  same sampled clients and shuffles, same SGD and weighted average;
- ``fedstream-sequential``: ``fedstream.simulate(trainer="sequential")``;
- ``fedstream-vectorized``: ``fedstream.simulate(trainer="vectorized")``.

Every contender does the same arithmetic, so the final accuracies must agree (a check,
not a target). Timing covers the training rounds and the final evaluation, after data and
model are built. Contenders are interleaved over ``--repeats`` runs and medians reported.

    python benchmarks/sim_digits.py [--repeats 3] [--rounds 30]

prints one JSON line per run and per contender median, then a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

CONTENDERS = ("plain", "fedstream-sequential", "fedstream-vectorized")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_fedstream(trainer: str, rounds: int) -> dict[str, Any]:
    import fedstream
    from fedstream.rounds import run_rounds
    from fedstream.simulation import SimulationConfig, build
    from fedstream.simulation.engine import torch_threads

    config = SimulationConfig(rounds=rounds, trainer=trainer, evaluate_every=0)
    with torch_threads(config.threads):
        setup = build(config)
        started = time.perf_counter()
        state, updates = setup.initial, 0
        for state, report in run_rounds(  # noqa: B007 (the last state is the result)
            setup.initial,
            config.build_strategy(),
            setup.transport,
            sorted(setup.dataset.clients),
            config.round_config(),
            config.rounds,
            setup.central_evaluate,
        ):
            updates += len(report.completed)
        wall = time.perf_counter() - started
    accuracy = setup.central_evaluate(state.params)["accuracy"]
    assert fedstream.__version__
    return {"wall_s": wall, "client_updates": updates, "final_accuracy": accuracy}


def run_plain(rounds: int) -> dict[str, Any]:
    """FedAvg written directly in PyTorch. Only the data arrays and the seeds come from
    fedstream's setup, so both sides start from identical inputs."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    from fedstream.simulation import SimulationConfig, build

    config = SimulationConfig(rounds=rounds, evaluate_every=0)
    torch.set_num_threads(config.threads)
    setup = build(config)
    clients = setup.dataset.clients
    ids = sorted(clients)
    data = {
        c: (torch.from_numpy(clients[c].x_train), torch.from_numpy(clients[c].y_train)) for c in ids
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = nn.Sequential(
            nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
        )
    weights = list(model.parameters())
    global_weights = [w.detach().clone() for w in weights]
    bit_generator = np.random.PCG64()
    bit_generator.state = dict(setup.initial.rng_state)
    rng = np.random.Generator(bit_generator)

    started = time.perf_counter()
    updates = 0
    for _ in range(config.rounds):
        chosen = rng.choice(len(ids), size=20, replace=False)
        seeds = rng.integers(0, 2**63 - 1, size=20)
        sums = [torch.zeros_like(w, dtype=torch.float64) for w in global_weights]
        total = 0.0
        for index, seed in zip(chosen, seeds, strict=True):
            x, y = data[ids[int(index)]]
            with torch.no_grad():
                for w, g in zip(weights, global_weights, strict=True):
                    w.copy_(g)
            shuffle = np.random.default_rng(int(seed))
            n = x.shape[0]
            for _ in range(config.local_epochs):
                order = torch.from_numpy(shuffle.permutation(n))
                for start in range(0, n, config.batch_size):
                    batch = order[start : start + config.batch_size]
                    loss = F.cross_entropy(model(x[batch]), y[batch])
                    grads = torch.autograd.grad(loss, weights)
                    with torch.no_grad():
                        for w, g in zip(weights, grads, strict=True):
                            w.add_(g, alpha=-config.lr)
            with torch.no_grad():
                for s, w, g in zip(sums, weights, global_weights, strict=True):
                    s += n * (w - g).double()
            total += n
            updates += 1
        for g, s in zip(global_weights, sums, strict=True):
            g += (s / total).to(g.dtype)
    with torch.no_grad():
        for w, g in zip(weights, global_weights, strict=True):
            w.copy_(g)
        logits = model(torch.from_numpy(setup.dataset.x_heldout))
        accuracy = float(
            (logits.argmax(1) == torch.from_numpy(setup.dataset.y_heldout)).double().mean()
        )
    wall = time.perf_counter() - started
    return {"wall_s": wall, "client_updates": updates, "final_accuracy": accuracy}


def run_one(contender: str, rounds: int) -> dict[str, Any]:
    if contender == "plain":
        figures = run_plain(rounds)
    else:
        figures = run_fedstream(contender.removeprefix("fedstream-"), rounds)
    figures["client_updates_per_s"] = figures["client_updates"] / figures["wall_s"]
    figures["peak_rss_mb"] = peak_rss_mb()
    return {"contender": contender, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--contender", choices=CONTENDERS, help="run one contender in this process")
    args = parser.parse_args()
    if args.contender:
        print(json.dumps(run_one(args.contender, args.rounds)))
        return

    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in CONTENDERS}
    for repeat in range(args.repeats):
        for contender in CONTENDERS:
            done = subprocess.run(
                [sys.executable, __file__, "--contender", contender, "--rounds", str(args.rounds)],
                capture_output=True,
                text=True,
                check=True,
            )
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            figures["repeat"] = repeat
            print(json.dumps(figures), flush=True)
            runs[contender].append(figures)

    medians = {}
    for contender, results in runs.items():
        median = {
            key: statistics.median(r[key] for r in results)
            for key in ("wall_s", "client_updates_per_s", "peak_rss_mb", "final_accuracy")
        }
        medians[contender] = median
    plain_wall = medians["plain"]["wall_s"]
    for contender, median in medians.items():
        median["wall_vs_plain"] = median["wall_s"] / plain_wall
        print(json.dumps({"contender": contender, "median_of": args.repeats, **median}))

    print()
    header = ("contender", "wall s", "updates/s", "peak MB", "accuracy", "× plain")
    print(f"{header[0]:<22} " + " ".join(f"{h:>9}" for h in header[1:]))
    for contender, m in medians.items():
        print(
            f"{contender:<22} {m['wall_s']:>9.2f} {m['client_updates_per_s']:>9.0f} "
            f"{m['peak_rss_mb']:>9.0f} {m['final_accuracy']:>9.4f} {m['wall_vs_plain']:>9.2f}"
        )
    accuracies = {round(m["final_accuracy"], 3) for m in medians.values()}
    print("final accuracies agree" if len(accuracies) == 1 else f"ACCURACIES DIFFER: {accuracies}")


if __name__ == "__main__":
    main()
