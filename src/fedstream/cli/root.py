"""The ``fedstream`` command group: options every command shares, and the table of
commands, each imported only when it is used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import click

import fedstream

COMMANDS: Mapping[str, tuple[str, str]] = {
    "client": (
        "fedstream.cli.deploy",
        "Join a federated run as one client; reconnects until the server ends the run, or",
    ),
    "dashboard": (
        "fedstream.cli.dashboard",
        "Watch runs live in a browser: runs, curves, client outcomes, model versions.",
    ),
    "data": ("fedstream.cli.data", "Inspect data sets and how they split over clients."),
    "new": (
        "fedstream.cli.new",
        "Start a federated project NAME that fedstream run runs as it is.",
    ),
    "run": (
        "fedstream.cli.run",
        "Run a simulated federated training (digits, 100 clients, FedAvg by default).",
    ),
    "runs": (
        "fedstream.cli.runs",
        "Read the run store: past and running runs, their rounds and metrics.",
    ),
    "serve": (
        "fedstream.cli.serve",
        "Serve a run's model (or one client's personal model) over HTTP(S), following it.",
    ),
    "server": (
        "fedstream.cli.deploy",
        "Serve a federated run to clients that connect over gRPC (TLS unless --insecure).",
    ),
    "sweep": (
        "fedstream.cli.sweep",
        "Run every combination of SWEEP_FILE's [grid] for each of its seeds, and compare.",
    ),
    "tokens": (
        "fedstream.cli.deploy",
        "Make a random token for every client of a run config, and each client's SecAgg+",
    ),
}
"""Each command: the module that defines it, and the first line of its help, which the
command list shows without importing the module (``tests/cli`` keeps the two in step)."""


class LazyGroup(click.Group):
    """A group whose commands' modules (and what they import: torch, scikit-learn, gRPC)
    load only when one of them runs or shows its own help, so ``fedstream --help`` and
    ``fedstream --version`` answer at once."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            importlib.import_module(COMMANDS[cmd_name][0])  # its decorators register it
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [
            (name, click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit))
            for name in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
