"""The ``fedstream`` command line."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import fedstream
from fedstream.errors import ConfigError, FedstreamError
from fedstream.simulation.config import HELP, SimulationConfig, fields, from_mapping, load_toml
from fedstream.simulation.presets import PRESETS, preset


def _setting_options(
    command: Callable[..., Any], only: frozenset[str] | None = None
) -> Callable[..., Any]:
    """One ``--flag`` per ``SimulationConfig`` field (or those in ``only``), so flags and
    TOML keys never drift."""
    defaults = SimulationConfig()
    for field in reversed(fields()):
        if only is not None and field.name not in only:
            continue
        default = getattr(defaults, field.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        command = click.option(
            f"--{field.name.replace('_', '-')}",
            field.name,
            default=None,
            metavar="VALUE",
            help=f"{HELP.get(field.name, field.name)} [default: {shown}]",
        )(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(fedstream.__version__, prog_name="fedstream")
def main() -> None:
    """fedstream: federated learning that trains across data holders without moving data."""


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML file of settings; flags override it.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Output folder [default: runs/<time>-<dataset>-<strategy>].",
)
@click.option(
    "--preset",
    "preset_name",
    default=None,
    metavar="NAME",
    help="Start from a named experiment: " + ", ".join(PRESETS) + ".",
)
@click.option("--quiet", is_flag=True, help="No progress bar or table.")
@_setting_options
def run(
    config_path: Path | None,
    output: Path | None,
    preset_name: str | None,
    quiet: bool,
    **flags: str | None,
) -> None:
    """Run a simulated federated training (digits, 100 clients, FedAvg by default).

    Writes results.json, metrics.csv and curves.png to the output folder. Settings apply in
    this order: the preset, then the TOML file, then flags.
    """
    try:
        values = dict(preset(preset_name).to_dict()) if preset_name else {}
        values |= load_toml(config_path) if config_path else {}
        values |= {k: v for k, v in flags.items() if v is not None}
        config = from_mapping(values, source="config" if config_path else "flag")
        if output is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            output = Path("runs") / f"{stamp}-{config.dataset}-{config.strategy}"
        fedstream.simulate(config, output_dir=output, progress=not quiet)
    except ConfigError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except FedstreamError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    if quiet:
        click.echo(str(output))


DATA_SETTINGS = frozenset(
    {
        "num_clients",
        "partition",
        "alpha",
        "shards_per_client",
        "quantity_sigma",
        "heldout_fraction",
        "client_test_fraction",
        "synthetic_alpha",
        "synthetic_beta",
        "shakespeare_source",
        "shakespeare_edition",
        "seed",
    }
)


@main.group()
def data() -> None:
    """Inspect data sets and how they split over clients."""


@data.command()
@click.argument("dataset")
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    default=None,
    help="Heatmap PNG of clients × classes [default: data-<dataset>.png].",
)
@lambda command: _setting_options(command, DATA_SETTINGS)
def describe(dataset: str, plot: Path | None, **flags: str | None) -> None:
    """Print how DATASET splits over clients and draw a clients × classes heatmap.

    Synthetic and Shakespeare have natural clients only; for Shakespeare without
    --num-clients every role is described.
    """
    from rich.console import Console
    from rich.table import Table

    from fedstream.data.datasets import SHAKESPEARE_MIN_SAMPLES
    from fedstream.data.describe import plot_heatmap, summary
    from fedstream.data.shakespeare import describe_roles, load_roles
    from fedstream.simulation.engine import build_dataset

    values: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    values["dataset"] = dataset
    try:
        if dataset == "shakespeare" and "num_clients" not in values:
            config = from_mapping(
                {**values, "num_clients": 1, "clients_per_round": 1}, source="flag"
            )
            roles = load_roles(config.shakespeare_source, config.shakespeare_edition)
            facts: dict[str, Any] = describe_roles(roles)
            facts["roles_with_enough_samples"] = sum(
                len(t) - 80 >= SHAKESPEARE_MIN_SAMPLES for t in roles.values()
            )
            values["num_clients"] = facts["roles_with_enough_samples"]
        else:
            facts = {}
        config = from_mapping({**values, "clients_per_round": 1}, source="flag")
        split = build_dataset(config)
    except FedstreamError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    facts |= summary(split)
    table = Table(title=f"{dataset}: {config.split} over {len(split.clients)} clients")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in facts.items():
        table.add_row(key, f"{value:.1f}" if isinstance(value, float) else str(value))
    path = plot or Path(f"data-{dataset}.png")
    plot_heatmap(split, path, f"{dataset}, {config.split} partition")
    table.add_row("heatmap", str(path))
    Console().print(table)


if __name__ == "__main__":
    main()
