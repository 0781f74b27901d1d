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

The synchronous arm runs ``--rounds`` rounds; the asynchronous arms of the same seed run
until the synchronous arm's total simulated time, or at most ``--most`` times its client
updates (then "accuracy at sync's end" is the asynchronous arm's last).

    python benchmarks/quality/async_fedbuff.py [--seeds 0 1 2] [--rounds 30]

Prints a JSON line per run and a table; writes results/async_fedbuff.json and
results/async_fedbuff.png.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import time
from typing import Any

from common import RESULTS, print_table, save

from fedstream.simulation import SimulationConfig, build, preset
from fedstream.simulation.config import from_mapping, merge
from fedstream.simulation.engine import round_config, torch_threads
from fedstream.simulation.timeline import device_clock, server_steps

SYNC = "FedAvg (sync)"  # each data set's synchronous arm, whose time is the budget
CLOCK = {"speeds": "lognormal", "speed_sigma": 1.0, "seconds_per_example": 0.01}
DATASETS: dict[str, dict[str, Any]] = {
    "digits": {
        "base": {"data": {"alpha": 0.5}},
        "metric": "central_accuracy",
        "target": 0.85,
        "per_round": 20,
        "arms": {
            SYNC: {},
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
            SYNC: {},
            "FedBuff K=5": {"asynchronous": {"buffer_size": 5, "concurrency": 10}},
        },
    },
}


def arm_config(
    dataset: str, arm: str, seed: int, rounds: int, most: float = 10.0
) -> SimulationConfig:
    """The arm's settings; an asynchronous arm has steps for ``most`` times the
    synchronous arm's client updates (``run`` stops it earlier, at the synchronous arm's
    simulated time) and evaluates as often per update as the synchronous one."""
    spec = DATASETS[dataset]
    changes = merge(spec["base"], spec["arms"][arm])
    changes = merge(changes, {"clock": CLOCK, "execution": {"seed": seed}})
    if "asynchronous" in changes:
        buffer = changes["asynchronous"]["buffer_size"]
        sync_every = changes.get("run", {}).get("evaluate_every", 1)
        every = max(1, spec["per_round"] * sync_every // buffer)
        steps = math.ceil(most * rounds * spec["per_round"] / buffer)
        changes = merge(
            changes, {"run": {"mode": "async", "rounds": steps, "evaluate_every": every}}
        )
    else:
        changes = merge(changes, {"run": {"rounds": rounds}})
    if "preset" in spec:
        return preset(spec["preset"], **changes)
    return from_mapping(changes)


def run(job: tuple[str, str, int, SimulationConfig, float | None]) -> dict[str, Any]:
    """One arm: its (simulated time, accuracy) curve, until its rounds end or, for an
    asynchronous arm, past ``budget`` simulated seconds."""
    dataset, arm, seed, config, budget = job
    started = time.perf_counter()
    metric = DATASETS[dataset]["metric"]
    curve, updates = [], 0
    with torch_threads(config.execution.threads):
        setup = build(config)
        ids = sorted(setup.dataset.clients)
        assert setup.transport is not None  # built for a simulation
        steps = server_steps(
            config, setup, setup.initial, setup.transport, ids,
            round_config(config, setup), device_clock(config, setup), 0.0,
        )  # fmt: skip
        for _, report in steps:
            updates += len(report.completed)
            now = report.metrics["sim_time_s"]
            if metric in report.metrics:
                curve.append((now, report.metrics[metric]))
            if budget is not None and now >= budget and metric in report.metrics:
                break
    print(f"[{dataset} {arm} seed {seed}] {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return {
        "dataset": dataset,
        "arm": arm,
        "seed": seed,
        "curve": curve,
        "updates": updates,
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
            if r["dataset"] == dataset and r["arm"] == SYNC
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
    sync_time = {row["dataset"]: row["time to target s"] for row in rows if row["arm"] == SYNC}
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
        synchronous = [r for r in runs if r["dataset"] == dataset and r["arm"] == SYNC]
        budget = max(r["curve"][-1][0] for r in synchronous)
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
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--most", type=float, default=10.0)
    args = parser.parse_args()
    configs = {
        (dataset, arm, seed): arm_config(dataset, arm, seed, args.rounds, args.most)
        for seed in args.seeds
        for dataset, spec in DATASETS.items()
        for arm in spec["arms"]
    }
    runs: list[dict[str, Any]] = []

    def run_all(jobs: list[tuple[str, str, int, SimulationConfig, float | None]]) -> None:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            for result in pool.imap(run, jobs):
                last = result["curve"][-1]
                shown = {k: result[k] for k in ("dataset", "arm", "seed", "updates")}
                print(json.dumps(shown | {"sim_time_s": last[0], "accuracy": last[1]}), flush=True)
                runs.append(result)

    # the synchronous arms first: their total simulated time is each seed's budget
    run_all([(*key, config, None) for key, config in configs.items() if key[1] == SYNC])
    budgets = {(r["dataset"], r["seed"]): r["curve"][-1][0] for r in runs}
    run_all([
        (*key, config, budgets[key[0], key[2]])
        for key, config in configs.items() if key[1] != SYNC
    ])  # fmt: skip
    rows = summarise(runs)
    print_table(rows, ["dataset", "arm", "target", "time to target s", "reached", "speed-up",
                       "accuracy at sync's end", "sync's end s", "wall s"])  # fmt: skip
    save("async_fedbuff", {"rounds": args.rounds, "seeds": args.seeds, "runs": runs, "rows": rows})
    plot(runs)


if __name__ == "__main__":
    main()
