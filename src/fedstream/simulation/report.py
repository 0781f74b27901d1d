"""Run outputs: ``results.json``, ``metrics.csv``, ``curves.png`` and the final table."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.table import Table

import fedstream

if TYPE_CHECKING:
    from fedstream.simulation.engine import SimulationResult

CSV_COLUMNS = (
    "round",
    "completed",
    "failed",
    "train_loss",
    "fed_loss",
    "fed_accuracy",
    "central_loss",
    "central_accuracy",
    "dp_epsilon",
    "dp_clip",
    "bytes_down",
    "bytes_up",
    "fit_s",
    "total_s",
)


def versions() -> dict[str, str]:
    import sklearn
    import torch

    return {
        "fedstream": fedstream.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
    }


def _current_umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment, for every
    thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half file. The file
    gets the usual permissions (0666 less the umask), not mkstemp's private 0600."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def results_document(
    result: SimulationResult, data_summary: Mapping[str, Any], error: str | None = None
) -> dict[str, Any]:
    """Everything about a run as JSON: config, versions, data, totals, every round, and the
    error that stopped it early (``null`` when it finished)."""
    reports = result.reports
    return {
        "error": error,
        "config": result.config.to_dict(),
        "versions": versions(),
        "data": dict(data_summary),
        "wall_s": result.wall_s,
        "client_updates": result.client_updates,
        "client_updates_per_s": result.client_updates / result.wall_s if result.wall_s else None,
        "bytes_down": sum(r.bytes_down for r in reports),
        "bytes_up": sum(r.bytes_up for r in reports),
        "final_metrics": dict(result.final_metrics),
        "rounds": [r.to_dict() for r in reports],
    }


def csv_rows(result: SimulationResult) -> list[dict[str, Any]]:
    rows = []
    for report in result.reports:
        row: dict[str, Any] = {
            "round": report.round,
            "completed": len(report.completed),
            "failed": len(report.failures),
            "bytes_down": report.bytes_down,
            "bytes_up": report.bytes_up,
            "fit_s": round(report.times["fit_s"], 6),
            "total_s": round(report.times["total_s"], 6),
        }
        row |= {k: report.metrics[k] for k in CSV_COLUMNS if k in report.metrics}
        rows.append(row)
    return rows


def plot_curves(result: SimulationResult, path: Path) -> None:
    """Accuracy and loss against rounds (central and federated evaluation, training loss),
    and the headline metric against the cumulative bytes on the wire."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right, traffic) = plt.subplots(1, 3, figsize=(15, 4), dpi=110)
    series = {
        key: [(r.round, r.metrics[key]) for r in result.reports if key in r.metrics]
        for key in (
            "central_accuracy",
            "fed_accuracy",
            "central_loss",
            "fed_loss",
            "train_loss",
            "central_mse",
        )
    }
    for axis, keys, label in (
        (left, ("central_accuracy", "fed_accuracy"), "accuracy"),
        (right, ("central_loss", "fed_loss", "train_loss"), "loss"),
    ):
        for key in keys:
            if series[key]:
                xs, ys = zip(*series[key], strict=True)
                axis.plot(xs, ys, marker="o", markersize=3, label=key)
        axis.set_xlabel("round")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    cumulative_up = np.cumsum([r.bytes_up for r in result.reports]) / 1e6
    for key in ("central_accuracy", "fed_accuracy", "central_mse"):
        points = [
            (cumulative_up[i], r.metrics[key])
            for i, r in enumerate(result.reports)
            if key in r.metrics
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            traffic.plot(xs, ys, marker="o", markersize=3, label=key)
    traffic.set_xlabel("cumulative uplink MB (all clients)")
    traffic.set_ylabel("metric")
    traffic.grid(alpha=0.3)
    if traffic.lines:
        traffic.legend()
    config = result.config
    setting = (
        f"{config.data.num_clients} clients, {config.data.split} partition, {config.model.name}"
        if config.model.app is None and result.data in ("", config.data.dataset)
        else f"{len(result.reports[-1].sampled) if result.reports else 0} clients a round"
    )
    figure.suptitle(f"{result.description}: {setting}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write_outputs(
    result: SimulationResult, data_summary: Mapping[str, Any], out: Path, error: str | None = None
) -> None:
    """Write the three output files into ``out`` (created if needed), each atomically.
    ``error`` records why a run stopped before its last round."""
    out.mkdir(parents=True, exist_ok=True)
    document = results_document(result, data_summary, error)
    atomic_write(out / "results.json", json.dumps(document, indent=2).encode())
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_rows(result))
    atomic_write(out / "metrics.csv", table.getvalue().encode())
    plot_curves(result, out / "curves.png")


def summary_table(result: SimulationResult) -> Table:
    """The final table a person reads after a run."""
    table = Table(title=f"fedstream: {result.description}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("rounds", str(len(result.reports)))
    table.add_row("client updates", str(result.client_updates))
    table.add_row("wall time", f"{result.wall_s:.2f} s")
    if result.wall_s:
        table.add_row("client updates / s", f"{result.client_updates / result.wall_s:.1f}")
    table.add_row(
        "bytes down / up",
        f"{sum(r.bytes_down for r in result.reports):,} / "
        f"{sum(r.bytes_up for r in result.reports):,}",
    )
    failures = sum(len(r.failures) for r in result.reports)
    table.add_row("client failures", str(failures))
    if result.trainer:
        table.add_row("trainer", result.trainer)
        table.add_row("executor", result.executor)
    for key, value in sorted(result.final_metrics.items()):
        table.add_row(key, f"{value:.4f}")
    if result.output_dir is not None:
        table.add_row("outputs", str(result.output_dir))
    return table
