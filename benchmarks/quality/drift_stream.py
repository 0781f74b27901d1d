"""A drifting stream (issue 21, benchmark 2): how closely the served model follows data
that arrives on the clients while the run goes on, synchronous FedAvg against FedBuff.

digits over 20 clients (IID), each client's training examples arriving evenly over 200
simulated seconds; every task trains 5 epochs on its client's newest 16 examples
(``[stream]``, ``fedstream.data.stream``). At 100 s the concept drifts: from then on every
new example, and the held-out set the served model is scored on, carries label
(y + 1) mod 10. Device speeds are lognormal with σ = 1 (mean 10 ms per example). Every
round or server step publishes a model; each arm runs until 200 simulated seconds.

Measured per run:
- the served model's accuracy on the stream at each step (``stream_accuracy``: the
  held-out set labelled by the concept of that moment), its time average over 0–200 s
  and over 100–200 s (a model counts from its step to the next; before the first, the
  chance level 0.1), and the seconds from the drift until it is back at 0.8;
- freshness: for every example that arrived, the seconds until a served model was
  trained on it (p50, p99), and the share never served by 200 s.

    python benchmarks/quality/drift_stream.py [--seeds 0 1 2]

Prints a JSON line per run and a table; writes results/drift_stream.json and
results/drift_stream.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np
from common import RESULTS, print_table, save

from fedstream.data.stream import freshness
from fedstream.simulation import SimulationConfig, build
from fedstream.simulation.config import from_mapping, merge
from fedstream.simulation.engine import round_config, torch_threads
from fedstream.simulation.timeline import device_clock, server_steps

HORIZON_S, DRIFT_S, RECOVERED = 200.0, 100.0, 0.8
BASE: dict[str, Any] = {
    "data": {"num_clients": 20, "partition": "iid"},
    "client": {"local_epochs": 5},
    "run": {"clients_per_round": 10, "evaluate_every": 0, "rounds": 5000},
    "clock": {"speeds": "lognormal", "speed_sigma": 1.0, "seconds_per_example": 0.01},
    "stream": {"window": 16, "horizon_s": HORIZON_S, "drift": "shift", "drift_at_s": DRIFT_S},
}
ARMS: dict[str, dict[str, Any]] = {
    "FedAvg (sync), 10 a round": {},
    "FedBuff, concurrency 10, K = 5": {
        "run": {"mode": "async"},
        "asynchronous": {"buffer_size": 5, "concurrency": 10},
    },
    "FedAsync, concurrency 10, K = 1": {
        "run": {"mode": "async"},
        "asynchronous": {"buffer_size": 1, "concurrency": 10},
        "strategy": {"server_lr": 0.3},
    },
}


def arm_config(arm: str, seed: int) -> SimulationConfig:
    return from_mapping(merge(merge(BASE, ARMS[arm]), {"execution": {"seed": seed}}))


def served_at(curve: list[tuple[float, float]], times: np.ndarray) -> np.ndarray:
    """The accuracy of the model served at each of ``times``: the last step's at or
    before it (the chance level 0.1 before the first step)."""
    steps = np.array([t for t, _ in curve])
    accuracy = np.array([0.1] + [a for _, a in curve])
    return accuracy[np.searchsorted(steps, times, side="right")]


def run(arm: str, seed: int) -> dict[str, Any]:
    config = arm_config(arm, seed)
    started = time.perf_counter()
    reports = []
    with torch_threads(config.execution.threads):
        setup = build(config)
        assert setup.stream is not None
        assert setup.transport is not None  # built for a simulation
        steps = server_steps(
            config, setup, setup.initial, setup.transport, sorted(setup.dataset.clients),
            round_config(config, setup), device_clock(config, setup), 0.0,
        )  # fmt: skip
        for _, report in steps:
            if report.metrics["sim_time_s"] > HORIZON_S:
                break
            reports.append(report)
        waited = freshness(setup.stream, reports)
        arrived = sum(
            int(np.sum(setup.stream.arrivals(c) <= reports[-1].metrics["sim_time_s"]))
            for c in setup.stream.clients
        )
    curve = [(r.metrics["sim_time_s"], r.metrics["stream_accuracy"]) for r in reports]
    grid = np.arange(0.0, HORIZON_S, 0.5)
    served = served_at(curve, grid)
    back = [t for t, a in curve if t >= DRIFT_S and a >= RECOVERED]
    return {
        "arm": arm,
        "seed": seed,
        "steps": len(reports),
        "updates": sum(len(r.completed) for r in reports),
        "mean accuracy 0-200 s": float(served.mean()),
        "mean accuracy 100-200 s": float(served[grid >= DRIFT_S].mean()),
        "recovery s": back[0] - DRIFT_S if back else None,
        "freshness p50 s": waited.percentile(50),
        "freshness p99 s": waited.percentile(99),
        "never served": waited.unserved / arrived,
        "wall s": time.perf_counter() - started,
        "curve": curve,
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        row: dict[str, Any] = {"arm": arm}
        for key in ("mean accuracy 0-200 s", "mean accuracy 100-200 s", "freshness p50 s",
                    "freshness p99 s", "never served", "updates", "wall s"):  # fmt: skip
            row[key] = statistics.median(r[key] for r in mine)
        recoveries = [r["recovery s"] for r in mine]
        row["recovery s"] = (
            statistics.median(recoveries) if all(x is not None for x in recoveries) else None
        )
        row["recovered"] = f"{sum(x is not None for x in recoveries)}/{len(recoveries)}"
        rows.append(row)
    return rows


def plot(runs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4), dpi=110)
    first = runs[0]["seed"]
    for index, arm in enumerate(ARMS):
        for r in runs:
            if r["arm"] == arm:
                xs, ys = zip(*r["curve"], strict=True)
                axis.step(xs, ys, where="post", color=f"C{index}",
                          alpha=0.9 if r["seed"] == first else 0.25,
                          label=arm if r["seed"] == first else None)  # fmt: skip
    axis.axvline(DRIFT_S, color="grey", linestyle=":", linewidth=1)
    axis.text(DRIFT_S + 2, 0.05, "drift: y → y + 1", fontsize=8, color="grey")
    axis.set_xlabel("simulated time (s)")
    axis.set_ylabel("served model's accuracy on the stream")
    axis.set_title("digits, 20 clients, window 16, lognormal speeds (σ = 1)", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(RESULTS / "drift_stream.png")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    runs = []
    for seed in args.seeds:  # interleaved: every arm of a seed before the next seed
        for arm in ARMS:
            result = run(arm, seed)
            shown = {k: v for k, v in result.items() if k != "curve"}
            print(json.dumps(shown), flush=True)
            print(f"[{arm} seed {seed}] {result['wall s']:.0f}s", file=sys.stderr)
            runs.append(result)
    rows = summarise(runs)
    print_table(rows, ["arm", "mean accuracy 0-200 s", "mean accuracy 100-200 s", "recovery s",
                       "recovered", "freshness p50 s", "freshness p99 s", "never served",
                       "updates", "wall s"])  # fmt: skip
    save("drift_stream", {"seeds": args.seeds, "runs": runs, "rows": rows})
    plot(runs)


if __name__ == "__main__":
    main()
