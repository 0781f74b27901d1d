"""``fedstream runs``: the run store's runs and their rounds."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from fedstream.cli.options import fail
from fedstream.cli.root import main
from fedstream.errors import ConfigError, FedstreamError
from fedstream.store.views import data_name, describe_config, headline, setting


@main.group()
def runs() -> None:
    """Read the run store: past and running runs, their rounds and metrics."""


STORE_OPTION = click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=Path("runs") / "store.sqlite",
    show_default=True,
    help="SQLite run store.",
)


@runs.command("list")
@STORE_OPTION
def runs_list(store: Path) -> None:
    """Every run in the store, newest first."""
    from rich.console import Console
    from rich.table import Table

    from fedstream.store.runs import RunStore

    if not store.exists():
        click.secho(f"error: no run store at {store} (use --store)", fg="red", err=True)
        sys.exit(2)
    table = Table(title=str(store))
    for column in ("run", "status", "rounds", "of", "strategy", "dataset", "last round", "started"):
        table.add_column(column)
    try:
        rows = RunStore(store).runs()
    except FedstreamError as exc:
        fail(exc)
    for row in rows:
        config = row["config"]
        table.add_row(
            row["id"],
            row["status"],
            str(row["rounds_done"]),
            str(setting(config, "run", "rounds")),
            describe_config(config)[0],
            data_name(row),
            headline(row["last_metrics"]),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created"])),
        )
    Console().print(table)


@runs.command("show")
@click.argument("run_id")
@STORE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def runs_show(run_id: str, store: Path, as_json: bool) -> None:
    """One run: its status, its settings (those that differ from the defaults) and every
    round's metrics."""

    from rich.console import Console
    from rich.table import Table

    from fedstream.store.runs import RunStore

    try:
        if not store.exists():
            raise ConfigError("--store", str(store), "an existing run store")
        run = RunStore(store).run(run_id)
    except FedstreamError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(run, indent=1))
        return
    console = Console()
    console.print(
        f"[bold]{run_id}[/]: {run['status']}, {run['rounds_done']} of "
        f"{setting(run['config'], 'run', 'rounds')} rounds, output {run['output_dir']}"
    )
    if run["error"]:
        console.print(f"[red]{run['error']}[/]")
    label, changed = describe_config(run["config"])
    settings = Table(title=label, show_header=False)
    settings.add_column("setting")
    settings.add_column("value")
    for key, value in changed:
        settings.add_row(key, json.dumps(value))
    console.print(settings)
    names = sorted({k for r in run["rounds"] for k in r["metrics"]})
    table = Table()
    for column in ("round", "completed", "failed", *names):
        table.add_column(column, justify="right")
    for r in run["rounds"]:
        table.add_row(
            str(r["round"]),
            str(len(r["completed"])),
            str(len(r["failures"])),
            *(f"{r['metrics'][n]:.4f}" if n in r["metrics"] else "" for n in names),
        )
    console.print(table)


@runs.command("compare")
@click.argument("run_ids", nargs=-1, required=True)
@STORE_OPTION
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    default=None,
    help="Also draw the runs' curves on one plot (PNG) here.",
)
def runs_compare(run_ids: tuple[str, ...], store: Path, plot: Path | None) -> None:
    """Runs side by side: strategy, rounds, and each final metric; --plot overlays them."""
    from rich.console import Console
    from rich.table import Table

    from fedstream.store.runs import RunStore

    try:
        if not store.exists():
            raise ConfigError("--store", str(store), "an existing run store")
        chosen = [RunStore(store).run(run_id) for run_id in run_ids]
    except FedstreamError as exc:
        fail(exc)
    finals = [r["rounds"][-1]["metrics"] if r["rounds"] else {} for r in chosen]
    names = sorted({k for metrics in finals for k in metrics})
    table = Table(title=f"{len(chosen)} runs from {store}")
    table.add_column("measure")
    for run in chosen:
        table.add_column(run["id"], justify="right")
    table.add_row("strategy", *(describe_config(r["config"])[0] for r in chosen))
    table.add_row("status", *(r["status"] for r in chosen))
    table.add_row("rounds", *(str(r["rounds_done"]) for r in chosen))
    for name in names:
        table.add_row(name, *(f"{m[name]:.4f}" if name in m else "" for m in finals))
    Console().print(table)
    if plot is not None:
        from fedstream.simulation.report import Panel, draw_panels

        metric = next((m for m in ("central_accuracy", "central_loss") if m in names), names[0])
        series = {
            r["id"]: (
                tuple(float(x["round"]) for x in r["rounds"] if metric in x["metrics"]),
                tuple(x["metrics"][metric] for x in r["rounds"] if metric in x["metrics"]),
            )
            for r in chosen
        }
        import matplotlib.pyplot as plt

        figure = draw_panels([Panel("round", metric, series)], "compared runs")
        figure.savefig(plot)
        plt.close(figure)
        click.echo(str(plot))
