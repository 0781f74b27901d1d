"""``fedstream run``: a simulated run, from settings or a preset, optionally served live."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

import fedstream
from fedstream.cli.options import (
    OVERWRITE_OPTION,
    flag_settings,
    load_config,
    publish_options,
    publish_target,
    setting_options,
    tracking_callbacks,
    tracking_options,
)
from fedstream.cli.root import main
from fedstream.errors import ConfigError, FedstreamError
from fedstream.simulation.config import coerce
from fedstream.simulation.presets import PRESETS

log = logging.getLogger("fedstream.cli")


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
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue the run in this folder from its newest checkpoint (--run.rounds may extend it).",
)
@click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=None,
    help="SQLite run store [default: store.sqlite beside the output folder].",
)
@OVERWRITE_OPTION
@publish_options
@tracking_options
@click.option(
    "--serve",
    "serve_port",
    type=int,
    default=None,
    metavar="PORT",
    help="Also serve the newest model on http://127.0.0.1:PORT while training.",
)
@setting_options
def run(
    config_path: Path | None,
    output: Path | None,
    preset_name: str | None,
    quiet: bool,
    resume_dir: Path | None,
    store: Path | None,
    overwrite: bool,
    serve_port: int | None,
    publish_to: str | None,
    publish_token_file: Path | None,
    publish_ca: Path | None,
    tensorboard_dir: Path | None,
    mlflow_uri: str | None,
    **flags: str | None,
) -> None:
    """Run a simulated federated training (digits, 100 clients, FedAvg by default).

    Writes a checkpoint after every round, records every round in the run store, and ends
    with results.json, metrics.csv and curves.png in the output folder. Settings apply in
    this order: the preset, then the TOML file, then flags.
    """
    try:
        if resume_dir is not None:
            if config_path or preset_name or output or overwrite:
                raise ConfigError(
                    "--resume",
                    str(resume_dir),
                    "no --config, --preset, --output or --overwrite beside it",
                )
            changes: dict[str, Any] = {
                section: {name: coerce(f"{section}.{name}", v) for name, v in values.items()}
                for section, values in flag_settings(flags).items()
            }
            fedstream.simulate(
                output_dir=resume_dir,
                resume=True,
                store=store,
                progress=not quiet,
                callbacks=tracking_callbacks(tensorboard_dir, mlflow_uri),
                **changes,
            )
            if quiet:
                click.echo(str(resume_dir))
            return
        config = load_config(config_path, preset_name, flags)
        if output is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            output = Path("runs") / f"{stamp}-{config.run_name}"
        stop = None
        if serve_port is not None:
            stop = _serve_in_background(
                store or output.parent / "store.sqlite", output.name, serve_port
            )
        target = publish_target(publish_to, publish_token_file, publish_ca)
        try:
            fedstream.simulate(
                config,
                output_dir=output,
                progress=not quiet,
                store=store,
                publish_to=target,
                overwrite=overwrite,
                callbacks=tracking_callbacks(tensorboard_dir, mlflow_uri),
            )
        finally:
            if stop is not None:
                stop()
    except ConfigError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except FedstreamError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)
    if quiet:
        click.echo(str(output))


def _serve_in_background(store: Path, run_id: str, port: int) -> Callable[[], None]:
    """Start the inference server for ``run_id`` in a thread; it serves each new round's
    model as training publishes it. Returns the function that stops it."""
    import threading

    import uvicorn

    from fedstream.serving import Server, create_app
    from fedstream.store.runs import RunStore

    RunStore(store)  # create it, so the server can open it before round 1
    server = uvicorn.Server(
        uvicorn.Config(create_app(Server(store, run_id)), host="127.0.0.1", port=port,
                       log_level="warning")
    )  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    click.echo(f"serving run {run_id} on http://127.0.0.1:{port}", err=True)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return stop
