"""Robust aggregation against attackers on digits: every rule × every attack.

sklearn digits over 100 clients with Dirichlet(0.5) label skew, the default MLP, 25
clients a round of which a seeded 20 % of all clients attack, 30 rounds, FedAvg's server
step on each rule's delta. Attacks: none, sign flipping (×10), scaling (×10, model
replacement), Gaussian noise (σ = 1), the colluding ALIE and IPM (ε = 0.5), which see
the round's honest updates, label flipping, and a backdoor (a 4-pixel trigger on half of
each attacker's examples, relabelled 0), whose success rate on triggered held-out digits
of other classes is reported beside the accuracy. Rules: the plain weighted mean,
coordinate median, trimmed mean (β = 0.2), Krum, Multi-Krum and Bulyan (each told f = 5
of 25: Bulyan's bound n > 4f + 3 = 23 holds), geometric median, centered clipping and
norm bounding (both scaled by the median norm). A run whose model
diverges until no update is finite is reported as diverged (0 in the heatmap).

    python benchmarks/quality/robustness_digits.py [--seeds 0 1 2] [--rounds 30]
        [--fraction 0.2] [--rules centered_clipping multi_krum]
        [--dataset breast_cancer --clients 50]

Prints a JSON line per run, a table of the median final accuracy over seeds, and writes
results/robustness_digits.json and results/robustness_digits.png (the heatmap).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from common import RESULTS, print_table, run_arms, save

from fedstream.simulation import SimulationConfig

RULES = (
    "mean", "median", "trimmed_mean", "krum", "multi_krum", "bulyan",
    "geometric_median", "centered_clipping", "norm_bound",
)  # fmt: skip
ATTACKS = ("none", "sign_flip", "scale", "gaussian", "alie", "ipm", "label_flip", "backdoor")


def config(
    rule: str,
    attack: str,
    seed: int,
    rounds: int,
    fraction: float = 0.2,
    dataset: str = "digits",
    clients: int = 100,
) -> SimulationConfig:
    return SimulationConfig().with_changes(
        data={"dataset": dataset, "num_clients": clients},
        run={"rounds": rounds, "clients_per_round": 25, "evaluate_every": 0},
        strategy={"aggregator": rule, "trim_fraction": 0.2, "byzantine": 5},
        attack={"kind": attack, "fraction": fraction},
        execution={"seed": seed},
    )


def heatmap(table: dict[str, dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rules = list(table)
    values = np.array([[table[r][a] for a in ATTACKS] for r in rules])
    figure, axis = plt.subplots(figsize=(9, 6), dpi=110)
    image = axis.imshow(values, vmin=0, vmax=1, cmap="viridis")
    axis.set_xticks(range(len(ATTACKS)), ATTACKS, rotation=30)
    axis.set_yticks(range(len(rules)), rules)
    for i in range(len(rules)):
        for j in range(len(ATTACKS)):
            axis.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center",
                      color="white" if values[i, j] < 0.6 else "black", fontsize=8)  # fmt: skip
    figure.colorbar(image, ax=axis, label="final central accuracy (median over seeds)")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--fraction", type=float, default=0.2, help="share of attackers")
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    parser.add_argument("--dataset", default="digits", help="a classification data set")
    parser.add_argument("--clients", type=int, default=100, help="clients the data is split over")
    args = parser.parse_args()
    rules = args.rules
    jobs = [
        (
            f"{rule} vs {attack} seed {seed}",
            config(rule, attack, seed, args.rounds, args.fraction, args.dataset, args.clients),
            "heldout",
        )
        for rule in rules
        for attack in ATTACKS
        for seed in args.seeds
    ]
    runs = run_arms(jobs, workers=2)
    table: dict[str, dict[str, float]] = {rule: {} for rule in rules}
    for rule in rules:
        for attack in ATTACKS:
            finals = [
                0.0 if run["failed"] else run["final"]["central_accuracy"]
                for run in runs
                if run["label"].startswith(f"{rule} vs {attack} seed")
            ]
            table[rule][attack] = statistics.median(finals)
    success = {
        rule: statistics.median(
            1.0 if run["failed"] else run["final"]["central_backdoor_success"]
            for run in runs
            if run["label"].startswith(f"{rule} vs backdoor seed")
        )
        for rule in rules
    }
    rows = [{"rule": rule, **table[rule], "backdoor success": success[rule]} for rule in rules]
    print_table(rows, ["rule", *ATTACKS, "backdoor success"])
    name = f"robustness_{args.dataset}" + ("" if args.fraction == 0.2 else f"_{args.fraction:g}")
    payload = {"seeds": args.seeds, "fraction": args.fraction, "table": table,
               "backdoor_success": success, "runs": runs}  # fmt: skip
    save(name, payload)
    title = (
        f"{args.dataset}, {args.fraction:.0%} attackers, {args.rounds} rounds, seeds {args.seeds}"
    )
    heatmap(table, RESULTS / f"{name}.png", title)


if __name__ == "__main__":
    main()
