"""What several commands share: the setting flags, the publish flags, the config they
build, and how they report a bad input."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from fedstream.errors import ConfigError, FedstreamError
from fedstream.simulation.config import (
    PROJECT_FILE,
    SimulationConfig,
    dotted,
    from_mapping,
    keys,
    load_toml,
    merge,
    project_settings,
)
from fedstream.simulation.presets import preset

log = logging.getLogger("fedstream.cli")

if TYPE_CHECKING:
    from fedstream.serving import PublishTarget


def tracking_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--tensorboard and --mlflow, shared by run and server."""
    options = [
        click.option(
            "--tensorboard",
            "tensorboard_dir",
            type=click.Path(path_type=Path),
            default=None,
            help="Also log every round's metrics for TensorBoard under this folder "
            "(tensorboard --logdir it).",
        ),
        click.option(
            "--mlflow",
            "mlflow_uri",
            default=None,
            metavar="URI",
            help="Also log the run to this MLflow tracking store (e.g. sqlite:///mlflow.db, or a "
            "tracking server's URL), experiment 'fedstream'.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def tracking_callbacks(tensorboard_dir: Path | None, mlflow_uri: str | None) -> list[Any]:
    """The loggers the tracking options ask for (``fedstream.tracking``)."""
    callbacks: list[Any] = []
    if tensorboard_dir is not None:
        from fedstream.tracking import TensorBoardLogger

        callbacks.append(TensorBoardLogger(tensorboard_dir))
    if mlflow_uri is not None:
        from fedstream.tracking import MLflowLogger

        callbacks.append(MLflowLogger(mlflow_uri))
    return callbacks


def publish_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--publish-to, --publish-token-file and --publish-ca, shared by run and server."""
    options = [
        click.option(
            "--publish-to",
            default=None,
            metavar="URL",
            help="Also push every round's model to a fedstream serve at URL (https:// for "
            "TLS), e.g. on another host.",
        ),
        click.option(
            "--publish-token-file",
            type=click.Path(path_type=Path),
            default=None,
            help="File holding that serving process's publish token.",
        ),
        click.option(
            "--publish-ca",
            type=click.Path(path_type=Path),
            default=None,
            help="CA certificate (PEM) that signed the serving process's TLS certificate.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


FLAG_SEPARATOR = "__"  # a flag --section.field arrives as the parameter section__field
SHORT_FLAGS = {"model.app": ("--app",)}  # the one setting a user types on every command


def setting_options(
    command: Callable[..., Any], sections: frozenset[str] | None = None
) -> Callable[..., Any]:
    """One ``--section.field`` flag per setting (of the ``sections`` given, or all), read
    from the config's own fields and the strategies' declared hyperparameters, so flags
    and TOML keys never drift."""
    defaults = SimulationConfig().to_dict()
    for key, text in reversed(list(keys().items())):
        section, _, name = key.partition(".")
        if sections is not None and section not in sections:
            continue
        default = defaults[section].get(name, "the strategy's own")
        shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else default
        command = click.option(
            f"--{section}.{name.replace('_', '-')}",
            *SHORT_FLAGS.get(key, ()),
            f"{section}{FLAG_SEPARATOR}{name}",
            default=None,
            metavar="VALUE",
            help=f"{text} [default: {shown}]",
        )(command)
    return command


def flag_settings(flags: Mapping[str, str | None]) -> dict[str, dict[str, Any]]:
    """The flags given, as settings by section."""
    return dotted({k.replace(FLAG_SEPARATOR, "."): v for k, v in flags.items() if v is not None})


def load_config(
    config_path: Path | None, preset_name: str | None, flags: Mapping[str, str | None]
) -> SimulationConfig:
    """The preset, then the TOML file (or, without one, the ``[tool.fedstream]`` table of
    the current folder's ``pyproject.toml``), then the flags."""
    values: dict[str, Any] = preset(preset_name).to_dict() if preset_name else {}
    if config_path is not None:
        values = merge(values, load_toml(config_path), source="config")
    else:
        values = merge(values, project_settings(), source=f"{PROJECT_FILE} [tool.fedstream]")
    values = merge(values, flag_settings(flags))
    app = values.get("model", {}).get("app")
    if app is not None:  # its clients are the population (engine.app_population)
        from fedstream.simulation.engine import app_population

        values = merge(values, app_population(str(app)))
    return from_mapping(values, source="config" if config_path else "flag")


def read_file(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(what, str(path), f"a readable file ({exc.strerror})") from None


def fail(exc: FedstreamError) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2 if isinstance(exc, ConfigError) else 1)


OVERWRITE_OPTION = click.option(
    "--overwrite",
    is_flag=True,
    help="Clear the output folder's earlier run (its files and its record in the store) "
    "and start afresh; without it a folder that holds anything is refused.",
)
CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML file of run settings; flags override it.",
)


def publish_target(
    url: str | None, token_file: Path | None, ca_file: Path | None
) -> PublishTarget | None:
    from fedstream.serving import PublishTarget

    if url is None:
        return None
    token = (read_file(token_file, "--publish-token-file") or b"").decode().strip()
    if not token:
        raise ConfigError("--publish-token-file", token_file, "a file holding the publish token")
    if ca_file is not None:
        read_file(ca_file, "--publish-ca")  # a clear error now rather than at round 1
    target = PublishTarget(url, token, str(ca_file) if ca_file is not None else None)
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if url.startswith("http://") and host not in ("127.0.0.1", "localhost", "[::1]"):
        log.warning("publishing to %s without TLS: the token and the models travel in clear", url)
    return target
