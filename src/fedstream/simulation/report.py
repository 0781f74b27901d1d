"""Run outputs: ``results.json``, ``metrics.csv``, ``curves.png`` and the final table."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.table import Table

import fedstream
from fedstream.types import RoundReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
    "sim_time_s",
    "staleness_mean",
    "staleness_max",
    "update_age_mean_s",
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


@dataclass(frozen=True)
class Panel:
    """One plot of ``curves.png``: its x and y labels and each named series' points."""

    x_label: str
    y_label: str
    series: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]]
    by_round: bool = True


def _points(reports: Sequence[RoundReport], key: str, xs: Sequence[float]) -> tuple[Any, ...]:
    chosen = [(x, r.metrics[key]) for x, r in zip(xs, reports, strict=True) if key in r.metrics]
    return tuple(zip(*chosen, strict=True)) if chosen else ()


def curve_panels(reports: Sequence[RoundReport]) -> list[Panel]:
    """The panels a run's metrics call for, each only when it has something to draw:
    accuracy (classification only), loss, the headline metric against the cumulative
    uplink bytes and against simulated time (a run on a clock only), and ε (a DP run
    only). An asynchronous run's x axis counts server steps."""
    rounds = [float(r.round) for r in reports]
    uplink = list(np.cumsum([r.bytes_up for r in reports]) / 1e6)
    steps = "server step" if any("staleness_mean" in r.metrics for r in reports) else "round"
    timed = bool(reports) and all("sim_time_s" in r.metrics for r in reports)

    def panel(
        y_label: str,
        keys: Sequence[str],
        xs: Sequence[float],
        x_label: str = steps,
        by_round: bool = True,
    ) -> Panel:
        drawn = {key: _points(reports, key, xs) for key in keys}
        return Panel(x_label, y_label, {k: v for k, v in drawn.items() if v}, by_round)

    accuracy = panel("accuracy", ("central_accuracy", "fed_accuracy"), rounds)
    loss = panel("loss", ("central_loss", "fed_loss", "train_loss"), rounds)
    headline = accuracy if accuracy.series else loss
    traffic = panel(
        headline.y_label,
        tuple(headline.series)[:2],
        uplink,
        x_label="cumulative uplink MB (all clients)",
        by_round=False,
    )
    clock = panel(
        headline.y_label,
        tuple(headline.series)[:2] if timed else (),
        [r.metrics.get("sim_time_s", 0.0) for r in reports],
        x_label="simulated time (s)",
        by_round=False,
    )
    privacy = panel("ε (privacy spent)", ("dp_epsilon",), rounds)
    return [p for p in (accuracy, loss, traffic, clock, privacy) if p.series]


def draw_panels(panels: Sequence[Panel], title: str) -> Figure:
    """:func:`curve_panels` side by side, 5 × 4 inches each; round axes get whole-number
    ticks. The caller saves and closes the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    count = max(len(panels), 1)
    figure, axes = plt.subplots(1, count, figsize=(5 * count, 4), dpi=110, squeeze=False)
    for axis, shown in zip(axes[0], panels, strict=False):
        for key, (xs, ys) in shown.series.items():
            axis.plot(xs, ys, marker="o", markersize=3, label=key)
        axis.set_xlabel(shown.x_label)
        axis.set_ylabel(shown.y_label)
        axis.grid(alpha=0.3)
        if shown.by_round:
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_curves(result: SimulationResult, path: Path) -> None:
    """``curves.png``: the run's panels under a title naming the run and its setting."""
    config = result.config
    setting = (
        f"{config.data.num_clients} clients, {config.data.split} partition, {config.model.name}"
        if config.model.app is None and result.data in ("", config.data.dataset)
        else f"{len(result.reports[-1].sampled) if result.reports else 0} clients a round"
    )
    figure = draw_panels(curve_panels(result.reports), f"{result.description}: {setting}")
    import matplotlib.pyplot as plt  # after draw_panels chose the Agg backend

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
