"""Asynchronous FL under stragglers: FedBuff (Nguyen et al. 2022) against synchronous
FedAvg at equal simulated time.

Every client's device has a compute time per example drawn from a lognormal with σ = 1
(heavy-tailed: the slowest of 100 devices about 10× the median; ``fedstream.simulation
.clock``), mean 10 ms. A synchronous round waits for its slowest sampled client; FedBuff
keeps ``concurrency`` clients training, steps every K updates and weights a stale update
by (1 + s)^-0.5. Both run on the same clock, data, model and seed; a run's curve is its
accuracy against simulated time, and the headline is the simulated time each arm needs
to reach the target accuracy, medians over ``--seeds``.

- digits, Dirichlet 0.5, 100 clients, the default MLP, 5 local epochs, lr 0.3: FedAvg
  with 20 clients a round against FedBuff with concurrency 20 and K = 10 (and FedAsync,
  K = 1, server lr 0.2); central accuracy on the held-out set;
- FedProx's Synthetic(1, 1), 30 clients, softmax regression, 20 local epochs, lr 0.01:
  FedAvg with 10 a round against FedBuff with concurrency 10 and K = 5; federated
  accuracy on the clients' test splits.

The asynchronous arms run for ``--async-factor`` times the synchronous arm's client
updates and are cut at the synchronous arm's total simulated time.

    python benchmarks/quality/async_fedbuff.py [--seeds 0 1 2] [--rounds 30]

Prints a JSON line per run and a table; writes results/async_fedbuff.json and
results/async_fedbuff.png.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from typing import Any

from common import RESULTS, print_table, save

import fedstream
from fedstream.simulation import SimulationConfig, preset
from fedstream.simulation.config import from_mapping, merge

CLOCK = {"speeds": "lognormal", "speed_sigma": 1.0, "seconds_per_example": 0.01}
DATASETS: dict[str, dict[str, Any]] = {
    "digits": {
        "base": {"data": {"alpha": 0.5}},
        "metric": "central_accuracy",
        "target": 0.85,
        "per_round": 20,
        "arms": {
            "FedAvg (sync)": {},
            "FedBuff K=10": {"asynchronous": {"buffer_size": 10, "concurrency": 20}},
            "FedAsync K=1": {
                "asynchronous": {"buffer_size": 1, "concurrency": 20},
                "strategy": {"name": "fedavg", "server_lr": 0.2},
            },
        },
    },
    "synthetic(1,1)": {
        "preset": "fedprox_synthetic",
        "base": {"run": {"evaluate_every": 2}},
        "metric": "fed_accuracy",
        "target": 0.70,
        "per_round": 10,
        "arms": {
            "FedAvg (sync)": {},
            "FedBuff K=5": {"asynchronous": {"buffer_size": 5, "concurrency": 10}},
        },
    },
}


def arm_config(dataset: str, arm: str, seed: int, rounds: int, factor: float) -> SimulationConfig:
    spec = DATASETS[dataset]
    changes = merge(spec["base"], spec["arms"][arm])
    changes = merge(changes, {"clock": CLOCK, "execution": {"seed": seed}})
    if "asynchronous" in changes:
        steps = round(rounds * spec["per_round"] * factor / changes["asynchronous"]["buffer_size"])
        every = max(1, steps // rounds)
        changes = merge(changes, {"run": {"mode": "async", "rounds": steps, "evaluate_every": every}})
    else:
        changes = merge(changes, {"run": {"rounds": rounds}})
    if "preset" in spec:
        return preset(spec["preset"], **changes)
    return from_mapping(changes)


def run(job: tuple[str, str, int, SimulationConfig]) -> dict[str, Any]:
    dataset, arm, seed, config = job
    started = time.perf_counter()
    result = fedstream.simulate(config)
    metric = DATASETS[dataset]["metric"]
    curve = [
        (r.metrics["sim_time_s"], r.metrics[metric]) for r in result.reports if metric in r.metrics
    ]
    print(f"[{dataset} {arm} seed {seed}] {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return {
        "dataset": dataset,
        "arm": arm,
        "seed": seed,
        "curve": curve,
        "updates": sum(len(r.completed) for r in result.reports),
        "wall_s": time.perf_counter() - started,
    }


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, accuracy in curve if accuracy >= target), None)


def at_time(curve: list[tuple[float, float]], budget: float) -> float:
    """The accuracy of the last evaluation at or before ``budget`` simulated seconds."""
    seen = [accuracy for t, accuracy in curve if t <= budget]
    return seen[-1] if seen else float("nan")


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for dataset, spec in DATASETS.items():
        budgets = {
            r["seed"]: r["curve"][-1][0]
            for r in runs
            if r["dataset"] == dataset and r["arm"] == "FedAvg (sync)"
        }
        for arm in spec["arms"]:
            mine = [r for r in runs if r["dataset"] == dataset and r["arm"] == arm]
            if not mine:
                continue
            reach = [time_to(r["curve"], spec["target"]) for r in mine]
            reached = [t for t in reach if t is not None]
            rows.append(
                {
                    "dataset": dataset,
                    "arm": arm,
                    "target": spec["target"],
                    "time to target s": statistics.median(reached)
                    if len(reached) == len(reach)
                    else None,
                    "reached": f"{len(reached)}/{len(reach)}",
                    "accuracy at sync's end": statistics.median(
                        at_time(r["curve"], budgets[r["seed"]]) for r in mine
                    ),
                    "sync's end s": statistics.median(budgets.values()),
                    "wall s": statistics.median(r["wall_s"] for r in mine),
                }
            )
    sync_time = {
        row["dataset"]: row["time to target s"] for row in rows if row["arm"] == "FedAvg (sync)"
    }
    for row in rows:
        base, mine = sync_time.get(row["dataset"]), row["time to target s"]
        row["speed-up"] = base / mine if base and mine else None
    return rows


def plot(runs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(DATASETS), figsize=(5.5 * len(DATASETS), 4), dpi=110)
    for axis, (dataset, spec) in zip(axes, DATASETS.items(), strict=True):
        budget = max(r["curve"][-1][0] for r in runs if r["dataset"] == dataset and "sync" in r["arm"])
        for index, arm in enumerate(spec["arms"]):
            for r in runs:
                if r["dataset"] == dataset and r["arm"] == arm:
                    xs, ys = zip(*[p for p in r["curve"] if p[0] <= budget], strict=True)
                    axis.plot(xs, ys, color=f"C{index}", alpha=0.8,
                              label=arm if r["seed"] == runs[0]["seed"] else None)  # fmt: skip
        axis.axhline(spec["target"], color="grey", linestyle=":", linewidth=1)
        axis.set_title(f"{dataset}: lognormal speeds (σ = 1)", fontsize=10)
        axis.set_xlabel("simulated time (s)")
        axis.set_ylabel(spec["metric"])
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / "async_fedbuff.png")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--async-factor", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [
        (dataset, arm, seed, arm_config(dataset, arm, seed, args.rounds, args.async_factor))
        for seed in args.seeds
        for dataset, spec in DATASETS.items()
        for arm in spec["arms"]
    ]
    runs = []
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for result in pool.imap(run, jobs):
            last = result["curve"][-1]
            print(json.dumps({k: result[k] for k in ("dataset", "arm", "seed", "updates")}
                             | {"sim_time_s": last[0], "accuracy": last[1]}), flush=True)  # fmt: skip
            runs.append(result)
    rows = summarise(runs)
    print_table(rows, ["dataset", "arm", "target", "time to target s", "reached", "speed-up",
                       "accuracy at sync's end", "sync's end s", "wall s"])  # fmt: skip
    save("async_fedbuff", {"rounds": args.rounds, "seeds": args.seeds, "runs": runs, "rows": rows})
    plot(runs)


if __name__ == "__main__":
    main()
