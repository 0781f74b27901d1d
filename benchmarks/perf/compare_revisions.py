"""This revision against an earlier one, in one interleaved run: same final parameters, and
client updates per second on the default job and W1/W2.

    python benchmarks/perf/compare_revisions.py --before 556e0bf [--repeats 5]

The earlier revision is checked out into a temporary git worktree and imported from there
(``PYTHONPATH`` comes before the installed package); each revision runs its own
``benchmarks/perf`` scripts, so each uses its own configuration API. Per workload:

- ``sha256``: of the final parameters of ``simulate(config(workload))`` (the same seed must
  end at the same parameters: a refactor may not change a number);
- ``updates_per_s``: client updates per CPU second of the rounds alone (after set-up, the
  vectorised trainer, one torch thread), each process timing ``--passes`` passes over the
  rounds and keeping its fastest; the median over ``--repeats`` processes, the two
  revisions alternating. CPU time, not wall time: on these shared machines a pass is
  often descheduled for longer than the whole difference being measured.

- with ``--instructions``: also the machine instructions the rounds take (one pass after
  a warm one, counted by valgrind's callgrind, switched on only around the rounds), which
  do not depend on what else the machine is doing: the figure to trust for a few percent.

Prints one JSON line per run and per median, then a table with the ratio after / before.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKLOADS = ("default", "W1", "W2")

FINGERPRINT = """
import hashlib, json, sys
sys.path.insert(0, {perf!r})
import numpy as np
import fedstream
from workloads import config
result = fedstream.simulate(config({workload!r}))
digest = hashlib.sha256()
for name, array in result.state.params.items():
    digest.update(name.encode()); digest.update(np.ascontiguousarray(array).tobytes())
accuracy = result.final_metrics["central_accuracy"]
print(json.dumps({{"sha256": digest.hexdigest(), "accuracy": accuracy}}))
"""


def run_python(tree: Path, args: list[str]) -> dict[str, Any]:
    """Run ``python args`` importing fedstream from ``tree``; its last line as JSON."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run(
        [sys.executable, *args], env=env, cwd=tree, capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[:3]} in {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def fingerprint(tree: Path, workload: str) -> dict[str, Any]:
    code = FINGERPRINT.format(perf=str(tree / "benchmarks" / "perf"), workload=workload)
    return run_python(tree, ["-c", code])


TIMING = """
import json, sys, time
sys.path.insert(0, {perf!r})
from workloads import config
from fedstream.rounds import run_rounds
from fedstream.simulation import build
from fedstream.simulation.engine import torch_threads
cfg = config({workload!r}, trainer="vectorized")
rounds = cfg.run.rounds if hasattr(cfg, "run") else cfg.rounds
best = float("inf")
with torch_threads(1):
    setup = build(cfg)
    for _ in range({passes}):
        started, updates = time.process_time(), 0
        for _, report in run_rounds(
            setup.initial, cfg.build_strategy(), setup.transport,
            sorted(setup.dataset.clients), cfg.round_config(), rounds, setup.central_evaluate,
        ):
            updates += len(report.completed)
        best = min(best, time.process_time() - started)
print(json.dumps({{"updates_per_s": updates / best}}))
"""


def timed(tree: Path, workload: str, passes: int) -> float:
    perf = str(tree / "benchmarks" / "perf")
    code = TIMING.format(perf=perf, workload=workload, passes=passes)
    return float(run_python(tree, ["-c", code])["updates_per_s"])


COUNTED = """
import sys
sys.path.insert(0, {perf!r})
from workloads import config
from fedstream.rounds import run_rounds
from fedstream.simulation import build
from fedstream.simulation.engine import torch_threads
cfg = config({workload!r}, trainer="vectorized")
rounds = cfg.run.rounds if hasattr(cfg, "run") else cfg.rounds
with torch_threads(1):
    setup = build(cfg)
    def once():
        for _ in run_rounds(
            setup.initial, cfg.build_strategy(), setup.transport,
            sorted(setup.dataset.clients), cfg.round_config(), rounds, setup.central_evaluate,
        ):
            pass
    once()
    print("READY", flush=True)
    sys.stdin.readline()
    once()
    print("DONE", flush=True)
    sys.stdin.readline()
"""


def instructions(tree: Path, workload: str) -> int:
    """Instructions one pass of the workload's rounds takes under callgrind (valgrind):
    counting is switched on when the process says READY and off when it says DONE."""
    perf = str(tree / "benchmarks" / "perf")
    code = COUNTED.format(perf=perf, workload=workload)
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={folder}/out.%p", sys.executable, "-c", code],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env={**os.environ, "PYTHONPATH": str(tree / "src")}, cwd=tree,
        )  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        for word, switch in (("READY", "on"), ("DONE", "off")):
            for line in process.stdout:
                if word in line:
                    break
            subprocess.run(["callgrind_control", "-i", switch, str(process.pid)], check=True,
                           capture_output=True)  # fmt: skip
            process.stdin.write("\n")
            process.stdin.flush()
        process.wait(timeout=1800)
        totals = [
            int(line.split()[1])
            for out in Path(folder).glob("out.*")
            for line in out.read_text().splitlines()
            if line.startswith(("summary:", "totals:"))
        ]
    return max(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier git revision")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="count them (valgrind)")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        before = Path(folder) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before), args.before],
            check=True, capture_output=True,
        )  # fmt: skip
        try:
            trees = {"before": before, "after": ROOT}
            rows = []
            for workload in args.workloads:
                prints = {name: fingerprint(tree, workload) for name, tree in trees.items()}
                speeds: dict[str, list[float]] = {name: [] for name in trees}
                for repeat in range(args.repeats):
                    for name, tree in trees.items():
                        speed = timed(tree, workload, args.passes)
                        speeds[name].append(speed)
                        line = {"workload": workload, "revision": name, "repeat": repeat}
                        print(json.dumps(line | {"updates_per_s": speed}), flush=True)
                medians = {name: statistics.median(values) for name, values in speeds.items()}
                row = {
                    "workload": workload,
                    "same_params": prints["before"]["sha256"] == prints["after"]["sha256"],
                    "accuracy": prints["after"]["accuracy"],
                    "before_updates_per_s": medians["before"],
                    "after_updates_per_s": medians["after"],
                    "ratio": medians["after"] / medians["before"],
                    "repeats": args.repeats,
                    "before": args.before,
                }
                if args.instructions:
                    counts = {name: instructions(tree, workload) for name, tree in trees.items()}
                    row |= {
                        "before_instructions": counts["before"],
                        "after_instructions": counts["after"],
                        "instruction_ratio": counts["after"] / counts["before"],
                    }
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
                check=False, capture_output=True,
            )  # fmt: skip
    print(
        f"\n{'workload':<10}{'same params':>13}{'before upd/s':>14}{'after upd/s':>13}{'ratio':>8}"
    )
    for row in rows:
        print(
            f"{row['workload']:<10}{row['same_params']!s:>13}{row['before_updates_per_s']:>14.0f}"
            f"{row['after_updates_per_s']:>13.0f}{row['ratio']:>8.3f}"
        )


if __name__ == "__main__":
    main()
