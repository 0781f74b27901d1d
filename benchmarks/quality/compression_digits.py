"""Compressed updates on digits: each codec and a few combinations against uncompressed
FedAvg, with the uplink bytes counted on the wire.

The default job's data, model and training (100 clients, Dirichlet 0.5, MLP 64-64, 20 per
round, 5 local epochs, batch 10, lr 0.3) for 100 rounds, so that sparsified arms, whose
error feedback spreads an update over several rounds, have time to converge. Accuracy is on
the held-out 20 %, the median over seeds; the ratio is uncompressed uplink bytes over the
arm's, summed over the run.

    python benchmarks/quality/compression_digits.py [--rounds 100] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from common import RESULTS, by_section, print_table, run_arms, save

from fedstream.simulation.config import from_mapping

ARMS: dict[str, dict[str, str]] = {
    "none": {},
    "q8": {"compression": "q8"},
    "q4": {"compression": "q4"},
    "qsgd:16": {"compression": "qsgd:16"},
    "topk:0.1": {"compression": "topk:0.1"},
    "randk:0.1": {"compression": "randk:0.1"},
    "threshold:0.01": {"compression": "threshold:0.01"},
    "topk:0.1+q4": {"compression": "topk:0.1+q4"},
    "topk:0.015+q4": {"compression": "topk:0.015+q4"},
    "topk:0.01+q4": {"compression": "topk:0.01+q4"},
    "topk:0.015+q4, q8 broadcast": {"compression": "topk:0.015+q4", "broadcast": "q8"},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--plot-only", action="store_true", help="redraw from saved results")
    args = parser.parse_args()
    if args.plot_only:
        saved = json.loads((RESULTS / "compression_digits.json").read_text())
        plot(saved["runs"], args.seeds[0])
        return
    jobs = [
        (
            f"{name}|{seed}",
            from_mapping(by_section(rounds=args.rounds, seed=seed, evaluate_every=5, **arm)),
            "heldout",
        )
        for name, arm in ARMS.items()
        for seed in args.seeds
    ]
    runs = run_arms(jobs, workers=2)
    by_label = {r["label"]: r for r in runs}
    base = {s: by_label[f"none|{s}"]["bytes_up"] for s in args.seeds}
    base_down = {s: by_label[f"none|{s}"]["bytes_down"] for s in args.seeds}
    base_acc = statistics.median(
        r["final"]["central_accuracy"] for r in runs if r["label"].startswith("none|")
    )
    rows = []
    for name in ARMS:
        mine = [r for r in runs if r["label"].split("|")[0] == name]
        accuracy = statistics.median(r["final"]["central_accuracy"] for r in mine)
        up = statistics.median(base[int(r["label"].split("|")[1])] / r["bytes_up"] for r in mine)
        down = statistics.median(
            base_down[int(r["label"].split("|")[1])] / r["bytes_down"] for r in mine
        )
        rows.append({
            "codec": name, "accuracy": accuracy, "Δ points": round(100 * (accuracy - base_acc), 2),
            "uplink ×": round(up, 1), "downlink ×": round(down, 2),
        })  # fmt: skip
    print(f"median over seeds {args.seeds}, {args.rounds} rounds")
    print_table(rows, ["codec", "accuracy", "Δ points", "uplink ×", "downlink ×"])
    save("compression_digits", {"rows": rows, "runs": runs})
    plot(runs, args.seeds[0])


def plot(runs: list[dict[str, Any]], seed: int) -> None:
    import itertools

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=110)
    tab20 = plt.get_cmap("tab20")
    colours = (tab20(i) for i in range(tab20.N))
    for run in runs:
        name, run_seed = run["label"].split("|")
        if int(run_seed) != seed:
            continue
        cumulative = list(itertools.accumulate(r["bytes_up"] for r in run["rounds"]))
        points = [
            (cumulative[r["round"] - 1], r["central_accuracy"])
            for r in run["rounds"]
            if "central_accuracy" in r
        ]
        xs, ys = zip(*points, strict=True)
        style = {"color": "black", "linewidth": 2} if name == "none" else {"color": next(colours)}
        axis.plot(xs, ys, marker="o", markersize=2, label=name, **style)
    axis.set_xscale("log")
    axis.set_xlabel("cumulative uplink bytes (all clients)")
    axis.set_ylabel("held-out accuracy")
    axis.set_title(
        f"Digits, 100 clients, Dirichlet 0.5: accuracy against uplink bytes (seed {seed})"
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(RESULTS / "compression_digits.png")
    plt.close(figure)


if __name__ == "__main__":
    main()
