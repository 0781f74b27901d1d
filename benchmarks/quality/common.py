"""Shared pieces of the quality reproductions: run labelled arms in worker processes,
record every round, print JSON lines and a table, draw curves."""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedstream.data.base import ClientData
from fedstream.errors import RoundFailedError
from fedstream.rounds import run_rounds
from fedstream.simulation import SimulationConfig, build, local_only_baseline
from fedstream.simulation.config import flat_names
from fedstream.simulation.engine import round_config, torch_threads, with_attackers

RESULTS = Path(__file__).parent / "results"


def by_section(**flat: Any) -> dict[str, dict[str, Any]]:
    """Settings written flat in an arm's table (``strategy="fedprox", mu=1.0``) placed in
    their sections, by the library's table of flat names."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, _, name = flat_names()[key].partition(".")
        out.setdefault(section, {})[name] = value
    return out


def run_arm(label: str, config: SimulationConfig, evaluate_on: str = "heldout") -> dict[str, Any]:
    """One federated run; every round's metrics. ``evaluate_on="train"`` makes the central
    evaluation use all clients' pooled training data (the FedProx paper's training loss)."""
    started = time.perf_counter()
    with torch_threads(config.execution.threads):
        setup = build(config)
        central = setup.central_evaluate
        if evaluate_on == "train":
            clients = list(setup.dataset.clients.values())
            x = np.concatenate([c.x_train for c in clients])
            y = np.concatenate([c.y_train for c in clients])
            pooled = ClientData(x[:0], y[:0], x, y)

            def central(params: Any) -> Mapping[str, float]:
                return setup.trainer.evaluate(params, "pooled-train", 0, pooled).metrics

        rounds = []
        transport: Any = setup.transport
        transport = with_attackers(transport, config, sorted(setup.dataset.clients))
        failed = None
        reports = run_rounds(
            setup.initial,
            config.build_strategy(),
            transport,
            sorted(setup.dataset.clients),
            round_config(config, setup),  # with the layers kept local (FedBN, FedPer)
            config.run.rounds,
            central,
            config.task_policy(),
        )
        while True:
            try:
                _, report = next(reports)
            except StopIteration:
                break
            except RoundFailedError as exc:  # an attack can leave no finite update at all
                failed = str(exc).splitlines()[0]
                break
            rounds.append(
                {
                    "round": report.round,
                    **report.metrics,
                    "completed": len(report.completed),
                    "bytes_up": report.bytes_up,
                    "bytes_down": report.bytes_down,
                }
            )
            rounds_total = config.run.rounds
            if report.round % max(1, rounds_total // 20) == 0 or report.round == rounds_total:
                shown = {k: round(v, 4) for k, v in report.metrics.items()}
                print(
                    f"[{label}] round {report.round}/{rounds_total} "
                    f"{time.perf_counter() - started:.0f}s {shown}",
                    file=sys.stderr,
                    flush=True,
                )
    last = rounds[-1] if rounds else {}
    final = {k: v for k, v in last.items() if k not in ("round", "bytes_up", "bytes_down")}
    return {
        "label": label,
        "failed": failed,
        "config": config.to_dict(),
        "wall_s": time.perf_counter() - started,
        "final": final,
        "bytes_up": sum(r["bytes_up"] for r in rounds),
        "bytes_down": sum(r["bytes_down"] for r in rounds),
        "rounds": rounds,
    }


def run_local_only(label: str, config: SimulationConfig) -> dict[str, Any]:
    """The local-only baseline of ``config``'s clients, each training the initial model
    alone for as many epochs as a client of the federated run trains on average (rounds ×
    local epochs × the share of clients sampled a round), in ``run_arm``'s record."""
    started = time.perf_counter()
    run, data = config.run, config.data
    share = config.clients_per_round_count() / data.num_clients
    epochs = max(1, round(run.rounds * config.client.local_epochs * share))
    found = local_only_baseline(config, epochs)
    return {
        "label": label,
        "failed": None,
        "config": config.to_dict(),
        "wall_s": time.perf_counter() - started,
        "final": {**found.metrics, "local_epochs": epochs},
        "bytes_up": 0,
        "bytes_down": 0,
        "rounds": [],
    }


def _run(job: tuple[str, SimulationConfig, str]) -> dict[str, Any]:
    label, config, kind = job
    return run_local_only(label, config) if kind == "local-only" else run_arm(*job)


def run_arms(
    jobs: Sequence[tuple[str, SimulationConfig, str]], workers: int = 2
) -> list[dict[str, Any]]:
    """Run every (label, config, kind) in ``workers`` processes, printing one JSON line per
    finished arm as it comes. ``kind`` is ``run_arm``'s ``evaluate_on`` (``"heldout"``,
    ``"train"``), or ``"local-only"`` for ``run_local_only``."""
    results = []
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for result in pool.imap(_run, jobs):
            print(
                json.dumps(
                    {
                        "label": result["label"],
                        "wall_s": round(result["wall_s"], 1),
                        **result["final"],
                    }
                ),
                flush=True,
            )
            results.append(result)
    return results


def save(name: str, payload: Any) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(w) for c, w in zip(columns, widths, strict=True)))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def plot_grid(
    path: Path,
    panels: Sequence[tuple[str, str, Sequence[dict[str, Any]]]],
    title: str,
    style: Callable[[str], dict[str, Any]] | None = None,
) -> None:
    """One panel per (title, metric, runs): that metric against rounds, a line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.5 * columns, 3.6 * rows), dpi=110, squeeze=False
    )
    for axis, (panel_title, metric, runs) in zip(axes.flat, panels, strict=False):
        for run in runs:
            points = [(r["round"], r[metric]) for r in run["rounds"] if metric in r]
            if points:
                xs, ys = zip(*points, strict=True)
                axis.plot(xs, ys, label=run["label"], **(style(run["label"]) if style else {}))
        axis.set_title(panel_title, fontsize=10)
        axis.set_xlabel("round")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for axis in list(axes.flat)[len(panels) :]:
        axis.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
