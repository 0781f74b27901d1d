"""``fedstream dashboard``: the live dashboard over a run store."""

from __future__ import annotations

from pathlib import Path

import click

from fedstream.cli.root import main


@main.command()
@click.option(
    "--runs",
    "runs_dir",
    type=click.Path(path_type=Path),
    default=Path("runs"),
    show_default=True,
    help="Folder whose store.sqlite holds the runs.",
)
@click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=None,
    help="The run store itself [default: RUNS/store.sqlite].",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8050, show_default=True, help="Port to listen on.")
def dashboard(runs_dir: Path, store: Path | None, host: str, port: int) -> None:
    """Watch runs live in a browser: runs, curves, client outcomes, model versions.

    Reads the run store as runs train (a running run's page gains a point every round)
    and serves the page at http://HOST:PORT/dashboard. Everything it needs ships inside
    the installed packages: it fetches nothing from the internet.
    """
    import uvicorn

    from fedstream.dashboard import create_dashboard_app
    from fedstream.store.runs import RunStore

    path = store or runs_dir / "store.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    RunStore(path)  # made if new, so the page works before the first run
    click.echo(f"fedstream dashboard on http://{host}:{port}/dashboard (store {path})", err=True)
    uvicorn.run(create_dashboard_app(path), host=host, port=port, log_level="warning")
