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


def _setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One ``--flag`` per ``SimulationConfig`` field, so flags and TOML keys never drift."""
    defaults = SimulationConfig()
    for field in reversed(fields()):
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
@click.option("--quiet", is_flag=True, help="No progress bar or table.")
@_setting_options
def run(config_path: Path | None, output: Path | None, quiet: bool, **flags: str | None) -> None:
    """Run a simulated federated training (digits, 100 clients, FedAvg by default).

    Writes results.json, metrics.csv and curves.png to the output folder.
    """
    try:
        values = load_toml(config_path) if config_path else {}
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


if __name__ == "__main__":
    main()
