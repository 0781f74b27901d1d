"""fedstream against Flower, pfl-research, a plain PyTorch loop and the compute floor
(``floor_loop.py``: the same cohorts as bare batched matmuls) on the workloads of
``workloads.py``.

    python benchmarks/perf/run.py [--workloads W1 W2 W3] [--repeats 3] [--contenders ...]

Each contender runs in a fresh process (Flower's and pfl's each in its own venv, made by
``setup_venv.sh flower`` and ``setup_venv.sh pfl``; one is left out with a note if its venv is
missing). Contenders are
interleaved over the repeats, and the medians are reported. Figures per run:

- ``wall_s``: the training rounds and the final evaluation, after data, model and
  workers are ready (for Flower, ``strategy.start``); ``total_s``: the whole process;
- ``updates_per_s``: client updates / ``wall_s``;
- ``peak_rss_mb`` and ``peak_pss_mb``: the peak, over samples every 50 ms, of the summed
  RSS (and PSS, which splits shared pages fairly) of the contender's whole process tree
  (Ray's daemons and actors included);
- ``final_accuracy`` on the server's held-out set: every contender does the same
  arithmetic, so these must agree (a check, not a target).

Prints one JSON line per run and per median, then a table per workload.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from workloads import WORKLOADS, config, export  # noqa: E402

FLOWER_PYTHON = HERE / ".flower-venv" / "bin" / "python"
PFL_PYTHON = HERE / ".pfl-venv" / "bin" / "python"
FEDSTREAM = ("sequential", "vectorized", "processes", "ray")
FIGURES = ("wall_s", "total_s", "updates_per_s", "peak_rss_mb", "peak_pss_mb", "final_accuracy")
CONTENDERS = ("plain", "floor", "flower", "pfl", *(f"fedstream-{c}" for c in FEDSTREAM))


def tree_memory_mb(root: int) -> tuple[float, float]:
    """Summed RSS and PSS (MB) of ``root`` and all its descendants, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    rss = pss = 0.0
    todo = [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) / 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) / 1024
        except OSError:
            continue
    return rss, pss


def measure(command: list[str]) -> dict[str, Any]:
    """Run ``command``, sampling its process tree's memory; its last JSON line plus the
    peaks and the total wall time."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = [0.0, 0.0]

    def sample() -> None:
        while process.poll() is None:
            rss, pss = tree_memory_mb(process.pid)
            peaks[0], peaks[1] = max(peaks[0], rss), max(peaks[1], pss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{command} failed ({process.returncode}):\n{err[-3000:]}")
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    figures.setdefault("total_s", time.perf_counter() - started)
    figures["peak_rss_mb"], figures["peak_pss_mb"] = peaks
    figures["updates_per_s"] = figures["client_updates"] / figures["wall_s"]
    return figures


def run_fedstream(workload: str, kind: str) -> dict[str, Any]:
    """One fedstream contender in this process: build, then time the rounds."""
    from fedstream.rounds import run_rounds
    from fedstream.simulation import build
    from fedstream.simulation.engine import executor_transport, torch_threads

    if kind in ("processes", "ray"):
        cfg = config(workload, trainer="vectorized", executor=kind)
    else:
        cfg = config(workload, trainer=kind)
    with torch_threads(cfg.execution.threads):
        setup = build(cfg)
        workers = executor_transport(cfg)
        transport = workers or setup.transport
        assert transport is not None
        started = time.perf_counter()
        updates = 0
        for state, report in run_rounds(  # noqa: B007 (the last ones are the result)
            setup.initial,
            cfg.build_strategy(),
            transport,
            sorted(setup.dataset.clients),
            cfg.round_config(),
            cfg.run.rounds,
            setup.central_evaluate,
        ):
            updates += len(report.completed)
        wall = time.perf_counter() - started
        if workers is not None:
            workers.close()
    return {
        "wall_s": wall,
        "client_updates": updates,
        "final_accuracy": report.metrics["central_accuracy"],
        "final_round": state.round,
    }


def command(contender: str, workload: str, exported: Path) -> list[str] | None:
    if contender == "plain":
        return [sys.executable, str(HERE / "plain_loop.py"), str(exported)]
    if contender == "floor":
        return [sys.executable, str(HERE / "floor_loop.py"), str(exported)]
    if contender == "flower":
        if not FLOWER_PYTHON.exists():
            return None
        return [str(FLOWER_PYTHON), str(HERE / "flower_sim.py"), str(exported)]
    if contender == "pfl":
        if not PFL_PYTHON.exists():
            return None
        return [str(PFL_PYTHON), str(HERE / "pfl_sim.py"), str(exported)]
    return [sys.executable, __file__, "--one", contender, "--workloads", workload]


def table(workload: str, medians: dict[str, dict[str, float]]) -> None:
    flower = medians.get("flower", {}).get("updates_per_s")
    floor = medians.get("floor", {}).get("updates_per_s")
    arithmetic = (
        medians["floor"]["updates_per_s"] * medians["floor"]["wall_s"]
        / medians["floor"]["arithmetic_s"]
        if "floor" in medians
        else None
    )  # fmt: skip
    flower_mb = medians.get("flower", {}).get("peak_rss_mb")
    print(f"\n{workload}")
    header = ("contender", "wall s", "total s", "upd/s", "× Flower", "× floor", "× arith",
              "RSS MB", "PSS MB", "accuracy")  # fmt: skip
    print(f"{header[0]:<22}" + "".join(f"{h:>10}" for h in header[1:]))
    for contender, m in medians.items():
        ratio = m["updates_per_s"] / flower if flower else float("nan")
        of_floor = m["updates_per_s"] / floor if floor else float("nan")
        of_arithmetic = m["updates_per_s"] / arithmetic if arithmetic else float("nan")
        print(
            f"{contender:<22}{m['wall_s']:>10.2f}{m['total_s']:>10.2f}{m['updates_per_s']:>10.0f}"
            f"{ratio:>10.1f}{of_floor:>10.2f}{of_arithmetic:>10.2f}"
            f"{m['peak_rss_mb']:>10.0f}{m['peak_pss_mb']:>10.0f}"
            f"{m['final_accuracy']:>10.4f}"
        )
    if flower_mb:
        best = min(m["peak_rss_mb"] for c, m in medians.items() if c.startswith("fedstream"))
        print(f"lowest fedstream peak RSS / Flower's: {best / flower_mb:.2f}")
    spread = [m["final_accuracy"] for m in medians.values()]
    print(f"final accuracies: {min(spread):.4f} … {max(spread):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads", nargs="+", default=["W1", "W2", "W3"], choices=list(WORKLOADS)
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        figures = run_fedstream(args.workloads[0], args.one.removeprefix("fedstream-"))
        print(json.dumps(figures))
        return

    with tempfile.TemporaryDirectory() as folder:
        for workload in args.workloads:
            exported = Path(folder) / f"{workload}.npz"
            export(workload, exported)
            runs: dict[str, list[dict[str, Any]]] = {}
            for repeat in range(args.repeats):
                for contender in args.contenders:
                    argv = command(contender, workload, exported)
                    if argv is None:
                        note = f"# {contender}: skipped on {workload} (no venv)"
                        print(note, file=sys.stderr)
                        continue
                    figures = measure(argv)
                    figures |= {"workload": workload, "contender": contender, "repeat": repeat}
                    print(json.dumps(figures), flush=True)
                    runs.setdefault(contender, []).append(figures)
            medians = {
                contender: {
                    key: statistics.median(r[key] for r in results)
                    for key in (*FIGURES, "arithmetic_s")
                    if key in results[0]
                }
                for contender, results in runs.items()
            }
            for contender, median in medians.items():
                line = {"workload": workload, "contender": contender, "median_of": args.repeats}
                print(json.dumps(line | median))
            table(workload, medians)


if __name__ == "__main__":
    main()
