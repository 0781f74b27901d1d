"""``fedstream new``: start a project."""

from __future__ import annotations

from pathlib import Path

import click

from fedstream.cli.options import fail
from fedstream.cli.root import main
from fedstream.errors import FedstreamError


@main.command()
@click.argument("name")
@click.option(
    "--dir",
    "folder",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder to write it into [default: ./NAME].",
)
def new(name: str, folder: Path | None) -> None:
    """Start a federated project NAME that fedstream run runs as it is.

    Writes a pyproject.toml holding the run's settings under [tool.fedstream], a package
    with the model, each site's data and the App that joins them, and a README.
    """
    from fedstream.project import write_project

    target = folder or Path(name)
    try:
        written = write_project(target, name)
    except FedstreamError as exc:
        fail(exc)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"next: cd {target} && fedstream run")
