"""``fedstream data``: how a data set splits over clients."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from fedstream.cli.options import flag_settings, setting_options
from fedstream.cli.root import main
from fedstream.errors import FedstreamError
from fedstream.simulation.config import from_mapping, merge


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
@lambda command: setting_options(command, frozenset({"data", "execution"}))
def describe(dataset: str, plot: Path | None, **flags: str | None) -> None:
    """Print how DATASET splits over clients and draw a clients × classes heatmap.

    Synthetic and Shakespeare have natural clients only. For Shakespeare the whole corpus
    is described first; then, without --data.num-clients, every role with enough windows is
    a client, and with --data.shakespeare-fraction the roles LEAF's sampler picks are.
    """
    from rich.console import Console
    from rich.table import Table

    from fedstream.data.datasets import ordered_split_roles
    from fedstream.data.describe import plot_heatmap, summary
    from fedstream.data.shakespeare import describe_roles, load_roles
    from fedstream.simulation.engine import build_dataset

    values = merge(flag_settings(flags), {"data": {"dataset": dataset}})
    one_a_round = {"run": {"clients_per_round": 1}}
    try:
        facts: dict[str, Any] = {}
        if dataset == "shakespeare":
            config = from_mapping(merge(values, {"data": {"num_clients": 1}} | one_a_round))
            data_settings = config.data
            roles = load_roles(data_settings.shakespeare_source, data_settings.shakespeare_edition)
            facts = describe_roles(roles)
            if "num_clients" not in values["data"] and data_settings.shakespeare_fraction is None:
                facts["roles_with_enough_samples"] = len(ordered_split_roles(roles))
                values["data"]["num_clients"] = facts["roles_with_enough_samples"]
        config = from_mapping(merge(values, one_a_round), source="flag")
        split = build_dataset(config)
    except FedstreamError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    facts |= summary(split)
    table = Table(title=f"{dataset}: {config.data.split} over {len(split.clients)} clients")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in facts.items():
        table.add_row(key, f"{value:.1f}" if isinstance(value, float) else str(value))
    path = plot or Path(f"data-{dataset}.png")
    plot_heatmap(split, path, f"{dataset}, {config.data.split} partition")
    table.add_row("heatmap", str(path))
    Console().print(table)
