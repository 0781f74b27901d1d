"""Compressed updates on a LEAF Shakespeare subset: LEAF's char-LSTM (about 820k
parameters), FedAvg with its LEAF settings, uncompressed against q8 and top-k with error
feedback plus 4-bit quantisation.

A stated subset, since a full LEAF run takes hours here: ``--clients`` roles drawn
(seeded) from those with at least 100 windows, ``--per-round`` of them per round,
``--rounds`` rounds. Accuracy is federated, weighted over every drawn role's test windows.

    python benchmarks/quality/compression_shakespeare.py [--clients 20] [--per-round 5] [--rounds 8]
"""

from __future__ import annotations

import argparse

from common import RESULTS, by_section, plot_grid, print_table, run_arms, save

from fedstream.simulation import preset

ARMS = {"none": "none", "q8": "q8", "topk:0.01+q4": "topk:0.01+q4"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    base = preset(
        "shakespeare_leaf",
        **by_section(
            shakespeare_fraction=None,
            client_test_fraction=0.2,
            num_clients=args.clients,
            clients_per_round=args.per_round,
            rounds=args.rounds,
            evaluate_every=max(1, args.rounds // 2),
        ),
    )
    jobs = [
        (name, base.with_changes(compression={"codec": codec}), "heldout")
        for name, codec in ARMS.items()
    ]
    runs = run_arms(jobs, workers=args.workers)
    rows = [
        {
            "codec": run["label"],
            "fed accuracy": run["final"].get("fed_accuracy"),
            "uplink MB": round(run["bytes_up"] / 1e6, 2),
        }
        for run in runs
    ]
    none_bytes = next(r["bytes_up"] for r in runs if r["label"] == "none")
    for row, run in zip(rows, runs, strict=True):
        row["uplink ×"] = round(none_bytes / run["bytes_up"], 1)
    print(f"{args.clients} roles, {args.per_round} per round, {args.rounds} rounds")
    print_table(rows, ["codec", "fed accuracy", "uplink MB", "uplink ×"])
    name = f"compression_shakespeare_{args.clients}clients_{args.rounds}rounds"
    save(name, {"rows": rows, "runs": runs})
    plot_grid(
        RESULTS / f"{name}.png",
        [("federated accuracy", "fed_accuracy", runs)],
        "Shakespeare subset: compressed updates",
    )


if __name__ == "__main__":
    main()
