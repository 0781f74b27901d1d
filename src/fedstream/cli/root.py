"""The ``fedstream`` command group: options every command shares."""

from __future__ import annotations

import click

import fedstream


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(fedstream.__version__, prog_name="fedstream")
@click.option(
    "--log-level",
    default="WARNING",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    help="Log messages at this level and above go to stderr.",
)
def main(log_level: str) -> None:
    """fedstream: federated learning that trains across data holders without moving data."""
    import logging

    logging.basicConfig(
        level=getattr(logging, log_level), format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
