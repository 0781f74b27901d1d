"""The server's streaming weighted sum against the machine's memory bandwidth.

    python benchmarks/perf/aggregation.py [--updates 100] [--params 10000000] [--repeats 3]

Adds ``--updates`` float32 updates of ``--params`` parameters into fedstream's float64
running sum (``PlainSum``, one update at a time, as they arrive) and times a plain numpy
copy of one update in the same run. Bandwidth is counted as STREAM does, by the bytes
each operation must move: the copy reads and writes 4 bytes per parameter, the sum reads
the update (4) and reads and writes the float64 total (8 + 8). Also reported: the update
bytes consumed per second against the copy's, and the plain ``total += w * update``
expression the chunked sum replaced. Four distinct updates (each far larger than the
caches) are cycled, so memory stays bounded. Prints one JSON line per repeat and the
median, then a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from fedstream.params import Params
from fedstream.secure.plain import PlainSum


def best_of(action, times: int = 5) -> float:  # type: ignore[no-untyped-def]
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        spent.append(time.perf_counter() - started)
    return min(spent)


def measure(updates: int, size: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    pool = [rng.standard_normal(size, dtype=np.float32) for _ in range(4)]
    weights = rng.uniform(10, 100, updates)
    target = np.empty_like(pool[0])
    copy_s = best_of(lambda: np.copyto(target, pool[1]))

    like = Params({"w": np.zeros(size, np.float32)})
    total = PlainSum(like)
    started = time.perf_counter()
    for k in range(updates):
        total.add(Params({"w": pool[k % 4]}), float(weights[k]))
    sum_s = time.perf_counter() - started
    total.result(1)

    plain = np.zeros(size, np.float64)
    started = time.perf_counter()
    for k in range(updates):
        plain += float(weights[k]) * pool[k % 4]
    expression_s = time.perf_counter() - started

    copy_moved = 8 * size / copy_s
    sum_moved = updates * 20 * size / sum_s
    return {
        "copy_gb_s": copy_moved / 1e9,
        "sum_s": sum_s,
        "sum_moved_gb_s": sum_moved / 1e9,
        "sum_vs_copy_moved": sum_moved / copy_moved,
        "sum_vs_copy_consumed": (updates * 4 * size / sum_s) / (4 * size / copy_s),
        "expression_s": expression_s,
        "chunked_speedup": expression_s / sum_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = []
    for repeat in range(args.repeats):
        figures = measure(args.updates, args.params)
        print(json.dumps({"repeat": repeat, **figures}), flush=True)
        runs.append(figures)
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(json.dumps({"median_of": args.repeats, "updates": args.updates,
                      "params": args.params, **median}))  # fmt: skip
    print(
        f"\n{args.updates} updates × {args.params:,} float32 parameters (median of {args.repeats})"
    )
    print(f"numpy copy              {median['copy_gb_s']:8.1f} GB/s moved")
    print(f"fedstream PlainSum      {median['sum_moved_gb_s']:8.1f} GB/s moved  "
          f"{median['sum_vs_copy_moved']:6.0%} of the copy's  "
          f"({median['sum_s']:.2f} s; update bytes at {median['sum_vs_copy_consumed']:.0%} "
          "of the copy's rate)")  # fmt: skip
    print(
        f"total += w·update       {median['expression_s']:8.2f} s  "
        f"(the chunked sum is {median['chunked_speedup']:.2f}× faster)"
    )


if __name__ == "__main__":
    main()
