"""Accuracy against ε on digits: central DP-FedAvg at several noise multipliers, adaptive
clipping, and local DP, for softmax regression and the MLP 64-64.

100 clients with Dirichlet(0.5) label skew, 50 per round (client sampling rate q = 0.5), 30
rounds, 5 local epochs, batch 10, lr 0.3, FedAvg; clip C = 1 (the best of 0.3 / 1 / 3 at
z = 1). ε is client-level, at δ = 1e-5, by RDP. Adaptive clipping starts at C = 0.1 and
targets the median update norm (γ = 0.5). Accuracy is on the held-out 20 % of digits, the
median over seeds.

    python benchmarks/quality/dp_digits.py [--seeds 0 1 2] [--rounds 30] [--plot-only]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from typing import Any

from common import RESULTS, plot_grid, print_table, run_arms, save

from fedstream.simulation.config import from_mapping, merge

MODELS = ("linear", "mlp")
NOISES = (0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)
BASE: dict[str, Any] = {"run": {"clients_per_round": 50, "evaluate_every": 5}}


def arms() -> dict[str, dict[str, Any]]:
    """Each arm's privacy settings."""
    out: dict[str, dict[str, Any]] = {
        "no DP": {},
        "clip only (z=0)": {"level": "client", "noise": 0.0},
    }
    for z in NOISES:
        out[f"central z={z}"] = {"level": "client", "noise": z}
    for lr in (0.2, 0.5):
        out[f"adaptive z=1 η={lr}"] = {
            "level": "client", "noise": 1.0, "clip": 0.1, "adaptive_clip": True, "clip_lr": lr,
        }  # fmt: skip
    out["local z=1"] = {"level": "local", "noise": 1.0}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--plot-only", action="store_true", help="redraw from saved results")
    args = parser.parse_args()
    if args.plot_only:
        saved = json.loads((RESULTS / "dp_digits.json").read_text())
        plot(saved["rows"], saved["runs"], args.seeds[0])
        return
    jobs = [
        (
            f"{name}|{model}|{seed}",
            from_mapping(
                merge(
                    BASE,
                    {
                        "model": {"name": model},
                        "run": {"rounds": args.rounds},
                        "execution": {"seed": seed},
                        "privacy": {**arm, "secure_noise": False},  # reproducible
                    },
                )
            ),
            "heldout",
        )
        for model in MODELS
        for name, arm in arms().items()
        for seed in args.seeds
    ]
    runs = run_arms(jobs, workers=2)
    rows = []
    for name in arms():
        row: dict[str, Any] = {"arm": name}
        for model in MODELS:
            finals = [r["final"] for r in runs if r["label"].startswith(f"{name}|{model}|")]
            row[f"{model} acc"] = statistics.median(f["central_accuracy"] for f in finals)
            epsilon = finals[0].get("dp_epsilon")
            row["ε"] = "∞" if epsilon is None or math.isinf(epsilon) else round(epsilon, 2)
        rows.append(row)
    print(f"median held-out accuracy over seeds {args.seeds}; ε at δ = 1e-5 after {args.rounds}")
    print_table(rows, ["arm", "ε", *(f"{m} acc" for m in MODELS)])
    save("dp_digits", {"rows": rows, "runs": runs})
    plot(rows, runs, args.seeds[0])


def plot(rows: list[dict[str, Any]], runs: list[dict[str, Any]], seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=110)
    for model, marker in zip(MODELS, ("o", "s"), strict=True):
        central = [r for r in rows if r["arm"].startswith("central")]
        axis.plot(
            [r["ε"] for r in central],
            [r[f"{model} acc"] for r in central],
            marker=marker,
            label=f"{model}: central DP-FedAvg",
        )
        no_dp = next(r for r in rows if r["arm"] == "no DP")[f"{model} acc"]
        axis.axhline(no_dp, linestyle="--", linewidth=1, color=axis.lines[-1].get_color())
    axis.set_xscale("log")
    axis.set_xticks([2, 5, 10, 20, 50], labels=["2", "5", "10", "20", "50"])
    axis.minorticks_off()
    axis.set_xlabel("ε (client-level, δ = 1e-5)")
    axis.set_ylabel("held-out accuracy")
    axis.set_title("Digits, 100 clients, 50 per round, 30 rounds\n(dashed: no DP)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / "dp_digits.png")
    plt.close(figure)
    chosen = ("no DP", "central z=0.7", "central z=1.0", "central z=2.0", "adaptive z=1 η=0.5")
    panels = [
        (
            f"{model} (seed {seed})",
            "central_accuracy",
            [
                dict(r, label=r["label"].split("|")[0])
                for r in runs
                if r["label"].split("|")[0] in chosen and r["label"].endswith(f"|{model}|{seed}")
            ],
        )
        for model in MODELS
    ]
    plot_grid(RESULTS / "dp_digits_rounds.png", panels, "Digits under DP: accuracy against rounds")


if __name__ == "__main__":
    main()
