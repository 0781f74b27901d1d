"""Server time of each robust rule against the plain weighted sum, at 100 clients × 1M
parameters (float32 updates, as the round buffers them), in one process, interleaved.

    python benchmarks/perf/robust_rules_cost.py [--clients 100] [--params 1000000] [--repeats 3]

Prints one JSON line per rule (median seconds over the repeats, and the ratio to the sum
timed in the same repeat) and a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from fedstream import Params
from fedstream.aggregation.robust import (
    bulyan,
    centered_clipping,
    coordinate_median,
    geometric_median,
    multi_krum,
    norm_bounded_mean,
    trimmed_mean,
)
from fedstream.aggregation.updates import UpdateMatrix


def streaming_sum(updates: UpdateMatrix) -> Any:
    """The plain sum as the round takes it: each update added in float64 as it arrives."""
    total = np.zeros(updates.rows.shape[1], np.float64)
    for weight, row in zip(updates.weights, updates.rows, strict=True):
        total += weight * row
    return total


def rules(byzantine: int) -> dict[str, Callable[[UpdateMatrix], Any]]:
    return {
        "weighted sum": streaming_sum,
        "median": coordinate_median,
        "trimmed_mean": lambda u: trimmed_mean(u, 0.2),
        "krum": lambda u: multi_krum(u, byzantine, keep=1),
        "multi_krum": lambda u: multi_krum(u, byzantine),
        "bulyan": lambda u: bulyan(u, byzantine),
        "geometric_median": geometric_median,
        "centered_clipping": centered_clipping,
        "norm_bound": norm_bounded_mean,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(args.clients, args.params)).astype(np.float32)
    like = Params({"w": np.zeros(args.params, np.float32)})
    updates = UpdateMatrix(
        tuple(f"c{k}" for k in range(args.clients)), np.ones(args.clients), rows, like
    )
    chosen = rules(byzantine=args.clients // 5 - 1)
    times: dict[str, list[float]] = {name: [] for name in chosen}
    for _ in range(args.repeats):
        for name, rule in chosen.items():  # interleaved: each repeat times every rule
            started = time.perf_counter()
            rule(updates)
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["weighted sum"])
    table = []
    for name, spent in times.items():
        seconds = statistics.median(spent)
        line = {"rule": name, "clients": args.clients, "params": args.params,
                "seconds": round(seconds, 4), "vs_sum": round(seconds / base, 1)}  # fmt: skip
        print(json.dumps(line), flush=True)
        table.append(line)
    print(f"\n{'rule':<18} {'seconds':>9} {'× sum':>8}")
    for line in table:
        print(f"{line['rule']:<18} {line['seconds']:>9.3f} {line['vs_sum']:>8.1f}")


if __name__ == "__main__":
    main()
