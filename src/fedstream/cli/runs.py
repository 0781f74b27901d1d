"""``fedstream runs``: the run store's runs and their rounds."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from fedstream.cli.options import fail
from fedstream.cli.root import main
from fedstream.errors import ConfigError, FedstreamError


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


def setting(config: dict[str, Any], section: str, name: str) -> Any:
    """A run's setting as its config.json holds it: by section (``config["run"]["rounds"]``),
    or flat in a run stored before the sections; ``""`` when absent."""
    table = config.get(section)
    if isinstance(table, dict) and name in table:
        return table[name]
    flat = "strategy" if (section, name) == ("strategy", "name") else name
    value = config.get(flat, "")
    return "" if isinstance(value, dict) else value


HEADLINE = (("central_accuracy", "acc", "{:.3f}"), ("central_loss", "loss", "{:.4g}"))


def headline(metrics: dict[str, float]) -> str:
    """A round's result in a few characters: accuracy (else loss) on the held-out set,
    and ε for a DP run, e.g. ``acc 0.912, ε 3.21``."""
    parts = [
        f"{label} {form.format(metrics[key])}" for key, label, form in HEADLINE if key in metrics
    ][:1]
    if "dp_epsilon" in metrics:
        parts.append(f"ε {metrics['dp_epsilon']:.2f}")
    return ", ".join(parts)


def describe_config(config: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    """A stored run's strategy as a person names it (``fedavg + DP (client) + q8``) and
    every setting that differs from the defaults, as (``section.name``, value) pairs. A
    config this version cannot read (a run from an older one) gives its strategy name and
    its settings as stored."""
    from fedstream.simulation.config import SimulationConfig, from_mapping

    try:
        parsed = from_mapping(config, source="run store")
    except FedstreamError:
        flat = [
            (key, value) for key, value in sorted(config.items()) if not isinstance(value, dict)
        ]
        return str(setting(config, "strategy", "name")), flat
    defaults = SimulationConfig().to_dict()
    changed = [
        (f"{section}.{name}", value)
        for section, values in parsed.to_dict().items()
        for name, value in values.items()
        if defaults.get(section, {}).get(name) != value
    ]
    return parsed.label, changed


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
