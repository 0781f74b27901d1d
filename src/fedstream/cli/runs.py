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
from fedstream.store.views import describe_config, headline, setting


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
            str(setting(config, "model", "app") or setting(config, "data", "dataset")),
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
