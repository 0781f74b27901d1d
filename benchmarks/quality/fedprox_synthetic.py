"""FedProx paper (Li et al. 2020), Figure 1 on Synthetic(1, 1): stragglers and the proximal term.

Softmax regression, 30 clients, 10 per round, 20 local epochs, batch 10, lr 0.01, 200
rounds. A share (0 %, 50 %, 90 %) of each round's clients are stragglers that finish only
1–19 of the 20 epochs. Arms: FedAvg (drops stragglers), FedProx μ = 0 and FedProx μ = 1
(both keep the stragglers' partial work). The paper's finding: with heavy stragglers,
FedProx with μ = 1 trains stably and ends clearly above FedAvg.

    python benchmarks/quality/fedprox_synthetic.py [--rounds 200] [--workers 2]

Training loss is the global model's loss on all clients' pooled training data (as in the
paper); test accuracy is federated, on every client's 10 % test split.
"""

from __future__ import annotations

import argparse
import json

from common import RESULTS, by_section, plot_grid, print_table, run_arms, save

from fedstream.simulation import SimulationConfig, preset

ARMS = {
    "FedAvg": {"strategy": "fedavg", "drop_stragglers": True},
    "FedProx μ=0": {"strategy": "fedprox", "mu": 0.0, "drop_stragglers": False},
    "FedProx μ=1": {"strategy": "fedprox", "mu": 1.0, "drop_stragglers": False},
}
STRAGGLERS = (0.0, 0.5, 0.9)


def config(rounds: int, stragglers: float, **arm: object) -> SimulationConfig:
    return preset(
        "fedprox_synthetic", **by_section(rounds=rounds, straggler_fraction=stragglers, **arm)
    )


def report(runs: list[dict], rounds: int) -> None:  # type: ignore[type-arg]
    rows = [
        {
            "arm": r["label"],
            "train loss": r["final"]["central_loss"],
            "min train loss": min(x["central_loss"] for x in r["rounds"]),
            "test accuracy": r["final"]["fed_accuracy"],
            "wall s": r["wall_s"],
        }
        for r in runs
    ]
    print_table(rows, ["arm", "train loss", "min train loss", "test accuracy", "wall s"])
    panels = []
    for metric in ("central_loss", "fed_accuracy"):
        for share in STRAGGLERS:
            tag = f"{int(share * 100)}% stragglers"
            arms = [
                dict(r, label=r["label"].split(", ")[0])
                for r in runs
                if r["label"].split(", ")[1] == tag
            ]
            panels.append((tag, metric, arms))
    plot_grid(
        RESULTS / "fedprox_synthetic.png",
        panels,
        f"Synthetic(1,1): FedAvg vs FedProx, {rounds} rounds (central_loss = training loss)",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--plot-only", action="store_true", help="redraw the table and PNG from the saved results"
    )
    args = parser.parse_args()
    if args.plot_only:
        runs = json.loads((RESULTS / "fedprox_synthetic.json").read_text())
        report(runs, len(runs[0]["rounds"]))
        return
    jobs = [
        (f"{name}, {int(share * 100)}% stragglers", config(args.rounds, share, **arm), "train")
        for share in STRAGGLERS
        for name, arm in ARMS.items()
    ]
    runs = run_arms(jobs, args.workers)
    save("fedprox_synthetic", runs)
    report(runs, args.rounds)


if __name__ == "__main__":
    main()
