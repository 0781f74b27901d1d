"""Seconds per LEAF Shakespeare round (the ``shakespeare_leaf`` preset): the sequential
trainer in process on one torch thread, against the same trainer on ``--workers`` worker
processes, in process on ``--workers`` torch threads, and the round's clients as one
vectorised cohort (their LSTMs unrolled, ``client.recurrent``) on one thread and on
``--workers`` threads, in one interleaved run.

    python benchmarks/perf/leaf_rounds.py [--rounds 2] [--repeats 1] [--workers 2]
        [--arms inprocess processes threads vectorized vectorized-threads]

Each arm runs ``--rounds`` rounds (no evaluation) in a fresh process; the figure is the
median of its rounds' ``total_s``. The process arms must end at bit-identical parameters
(a client trains the same wherever it runs); more threads may change the kernels'
summation order, and the vectorised cohort sums in another order than torch's fused LSTM
(equal to float rounding). Prints one JSON line per run and a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

ARMS = ("inprocess", "processes", "threads", "vectorized", "vectorized-threads")


def one_run(arm: str, workers: int, rounds: int) -> dict[str, Any]:
    """This arm's rounds in this process: seconds per round, and a digest of the params."""
    import hashlib

    import fedstream
    from fedstream.simulation import preset

    config = preset(
        "shakespeare_leaf",
        run={"rounds": rounds, "evaluate_every": 0, "evaluate_fraction": 0.0},
        execution={
            "trainer": "vectorized" if arm.startswith("vectorized") else "sequential",
            "executor": "processes" if arm == "processes" else "inprocess",
            "workers": workers,
            "threads": workers if arm.endswith("threads") else 1,
        },
    )
    result = fedstream.simulate(config)
    digest = hashlib.sha256(result.state.params.to_bytes()).hexdigest()
    seconds = [r.times["total_s"] for r in result.reports]
    return {"arm": arm, "s_per_round": statistics.median(seconds), "sha256": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--one", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.workers, args.rounds)), flush=True)
        return
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(args.repeats):
        for arm in args.arms:
            command = [sys.executable, __file__, "--one", arm, "--rounds", str(args.rounds),
                       "--workers", str(args.workers)]  # fmt: skip
            line = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            figures = json.loads(line.strip().splitlines()[-1])
            print(json.dumps(figures), flush=True)
            runs.setdefault(arm, []).append(figures)
    medians = {arm: statistics.median(r["s_per_round"] for r in rs) for arm, rs in runs.items()}
    digests = {arm: {r["sha256"] for r in rs} for arm, rs in runs.items()}
    print(json.dumps({"s_per_round": medians}))
    base = medians.get("inprocess")
    for arm, seconds in medians.items():
        speedup = f"{base / seconds:.2f}×" if base else "-"
        same = digests[arm] == digests.get("inprocess", digests[arm])
        print(f"{arm:<18} {seconds:7.1f} s a round  {speedup:>6}  same parameters: {same}")


if __name__ == "__main__":
    main()
