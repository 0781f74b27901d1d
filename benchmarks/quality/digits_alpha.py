"""Digits under label skew: Dirichlet α ∈ {0.1, 0.5, 100} for FedAvg, FedProx and FedAdam,
against the centralised model trained on the pooled client data.

The default job's settings (100 clients, 20 per round, MLP 64-64, 5 local epochs, batch 10,
lr 0.3, 30 rounds); FedProx μ = 0.01; FedAdam server lr 0.03, τ = 1e-3 (the best of
0.01 / 0.03 / 0.1 at α = 0.5). The centralised model sees the same examples for 30 epochs
with the same lr and batch. Accuracy is on the held-out 20 % of digits.

    python benchmarks/quality/digits_alpha.py [--rounds 30] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from common import RESULTS, plot_grid, print_table, run_arms, save

from fedstream.simulation import SimulationConfig, centralised_baseline
from fedstream.simulation.config import from_mapping, merge

ALPHAS = (0.1, 0.5, 100.0)
ARMS: dict[str, dict[str, Any]] = {
    "FedAvg": {"name": "fedavg"},
    "FedProx μ=0.01": {"name": "fedprox", "mu": 0.01},
    "FedAdam": {"name": "fedadam", "server_lr": 0.03},
}


def settings(alpha: float, seed: int, **sections: dict[str, Any]) -> SimulationConfig:
    """The default job at Dirichlet ``alpha`` and ``seed``, with ``sections`` laid over."""
    base = {"data": {"alpha": alpha}, "execution": {"seed": seed}}
    return from_mapping(merge(base, sections))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    jobs = [
        (
            f"{name}|{alpha}|{seed}",
            settings(alpha, seed, run={"rounds": args.rounds}, strategy=arm),
            "heldout",
        )
        for alpha in ALPHAS
        for name, arm in ARMS.items()
        for seed in args.seeds
    ]
    runs = run_arms(jobs, workers=2)
    central = {
        (alpha, seed): centralised_baseline(settings(alpha, seed), epochs=30)
        for alpha in ALPHAS
        for seed in args.seeds
    }
    rows = []
    for alpha in ALPHAS:
        row: dict[str, object] = {"alpha": alpha}
        for name in ARMS:
            accuracies = [
                r["final"]["central_accuracy"]
                for r in runs
                if r["label"].startswith(f"{name}|{alpha}|")
            ]
            row[name] = statistics.median(accuracies)
        row["centralised"] = statistics.median(central[(alpha, s)]["accuracy"] for s in args.seeds)
        rows.append(row)
    print(f"median held-out accuracy over seeds {args.seeds}")
    print_table(rows, ["alpha", *ARMS, "centralised"])
    save(
        "digits_alpha",
        {
            "rows": rows,
            "runs": runs,
            "centralised": {f"{a}|{s}": m for (a, s), m in central.items()},
        },
    )
    first = args.seeds[0]
    panels = [
        (
            f"Dirichlet α = {alpha} (seed {first})",
            "central_accuracy",
            [
                dict(r, label=r["label"].split("|")[0])
                for r in runs
                if r["label"].endswith(f"|{alpha}|{first}")
            ],
        )
        for alpha in ALPHAS
    ]
    plot_grid(RESULTS / "digits_alpha.png", panels, "Digits, 100 clients: accuracy against rounds")


if __name__ == "__main__":
    main()
