"""The ``fedstream`` command line."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import fedstream
from fedstream.errors import ConfigError, FedstreamError
from fedstream.simulation.config import (
    PROJECT_FILE,
    SimulationConfig,
    coerce,
    dotted,
    from_mapping,
    keys,
    load_toml,
    merge,
    project_settings,
)
from fedstream.simulation.presets import PRESETS, preset

if TYPE_CHECKING:
    from fedstream.serving import PublishTarget

log = logging.getLogger("fedstream.cli")


def _publish_options(command: Callable[..., Any]) -> Callable[..., Any]:
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


def _setting_options(
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
            f"{section}{FLAG_SEPARATOR}{name}",
            default=None,
            metavar="VALUE",
            help=f"{text} [default: {shown}]",
        )(command)
    return command


def _flag_settings(flags: Mapping[str, str | None]) -> dict[str, dict[str, Any]]:
    """The flags given, as settings by section."""
    return dotted({k.replace(FLAG_SEPARATOR, "."): v for k, v in flags.items() if v is not None})


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
    help="Continue the run in this folder from its newest checkpoint (--rounds may extend it).",
)
@click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=None,
    help="SQLite run store [default: store.sqlite beside the output folder].",
)
@_publish_options
@click.option(
    "--serve",
    "serve_port",
    type=int,
    default=None,
    metavar="PORT",
    help="Also serve the newest model on http://127.0.0.1:PORT while training.",
)
@_setting_options
def run(
    config_path: Path | None,
    output: Path | None,
    preset_name: str | None,
    quiet: bool,
    resume_dir: Path | None,
    store: Path | None,
    serve_port: int | None,
    publish_to: str | None,
    publish_token_file: Path | None,
    publish_ca: Path | None,
    **flags: str | None,
) -> None:
    """Run a simulated federated training (digits, 100 clients, FedAvg by default).

    Writes a checkpoint after every round, records every round in the run store, and ends
    with results.json, metrics.csv and curves.png in the output folder. Settings apply in
    this order: the preset, then the TOML file, then flags.
    """
    try:
        if resume_dir is not None:
            if config_path or preset_name or output:
                raise ConfigError(
                    "--resume", str(resume_dir), "no --config, --preset or --output beside it"
                )
            changes: dict[str, Any] = {
                section: {name: coerce(f"{section}.{name}", v) for name, v in values.items()}
                for section, values in _flag_settings(flags).items()
            }
            fedstream.simulate(
                output_dir=resume_dir, resume=True, store=store, progress=not quiet, **changes
            )
            if quiet:
                click.echo(str(resume_dir))
            return
        config = _load_config(config_path, preset_name, flags)
        if output is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            output = Path("runs") / f"{stamp}-{config.run_name}"
        stop = None
        if serve_port is not None:
            stop = _serve_in_background(
                store or output.parent / "store.sqlite", output.name, serve_port
            )
        target = _publish_target(publish_to, publish_token_file, publish_ca)
        try:
            fedstream.simulate(
                config, output_dir=output, progress=not quiet, store=store, publish_to=target
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


def _load_config(
    config_path: Path | None, preset_name: str | None, flags: Mapping[str, str | None]
) -> SimulationConfig:
    """The preset, then the TOML file (or, without one, the ``[tool.fedstream]`` table of
    the current folder's ``pyproject.toml``), then the flags."""
    values: dict[str, Any] = preset(preset_name).to_dict() if preset_name else {}
    if config_path is not None:
        values = merge(values, load_toml(config_path), source="config")
    else:
        values = merge(values, project_settings(), source=f"{PROJECT_FILE} [tool.fedstream]")
    values = merge(values, _flag_settings(flags))
    return from_mapping(values, source="config" if config_path else "flag")


def _read(path: Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(what, str(path), f"a readable file ({exc.strerror})") from None


def _fail(exc: FedstreamError) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2 if isinstance(exc, ConfigError) else 1)


CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="TOML file of run settings; flags override it.",
)


@main.command()
@CONFIG_OPTION
@click.option(
    "--tokens",
    "tokens_path",
    type=click.Path(path_type=Path),
    required=True,
    help="JSON file of client id → token; unknown clients are refused.",
)
@click.option(
    "--listen",
    default="127.0.0.1:50051",
    show_default=True,
    help="host:port to listen on (port 0 picks a free one and prints it).",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path),
    default=None,
    help="Server certificate chain (PEM).",
)
@click.option(
    "--tls-key", type=click.Path(path_type=Path), default=None, help="Server private key (PEM)."
)
@click.option(
    "--client-ca",
    type=click.Path(path_type=Path),
    default=None,
    help="CA for client certificates: turns on mutual TLS.",
)
@click.option(
    "--insecure", is_flag=True, help="Serve without TLS (tests, or a network you trust entirely)."
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Run folder [default: runs/<time>-<dataset>-<strategy>].",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Continue the run in this folder from its newest checkpoint.",
)
@click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=None,
    help="SQLite run store [default: store.sqlite beside the run folder].",
)
@click.option(
    "--round-timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds a round waits for answers before recording the silent as dropped.",
)
@click.option(
    "--wait-for",
    type=int,
    default=None,
    help="Clients to wait for before round 1 [default: all configured].",
)
@click.option(
    "--wait-timeout", type=float, default=300.0, show_default=True, help="Seconds to wait for them."
)
@click.option("--quiet", is_flag=True, help="No progress bar or table.")
@_publish_options
@_setting_options
def server(
    config_path: Path | None,
    tokens_path: Path,
    listen: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    client_ca: Path | None,
    insecure: bool,
    output: Path | None,
    resume_dir: Path | None,
    store: Path | None,
    round_timeout: float,
    wait_for: int | None,
    wait_timeout: float,
    quiet: bool,
    publish_to: str | None,
    publish_token_file: Path | None,
    publish_ca: Path | None,
    **flags: str | None,
) -> None:
    """Serve a federated run to clients that connect over gRPC (TLS unless --insecure)."""
    from fedstream.deploy import load_tokens, serve
    from fedstream.transport.grpc.server import ServerCredentials

    try:
        tokens = load_tokens(tokens_path)
        credentials = None
        if not insecure:
            if tls_cert is None or tls_key is None:
                raise ConfigError(
                    "--tls-cert",
                    None,
                    "a certificate and --tls-key (or --insecure to serve "
                    "without TLS); docs/deployment.md shows how to make them",
                )
            credentials = ServerCredentials(
                _read(tls_cert, "--tls-cert") or b"",
                _read(tls_key, "--tls-key") or b"",
                _read(client_ca, "--client-ca"),
            )
        if resume_dir is not None:
            config, folder = None, resume_dir
        else:
            config = _load_config(config_path, None, flags)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            folder = output or Path("runs") / f"{stamp}-{config.run_name}"

        def listening(port: int) -> None:
            click.echo(f"fedstream server listening on port {port}, run {folder.name}", err=True)

        serve(
            config,
            tokens,
            listen=listen,
            credentials=credentials,
            output_dir=folder,
            resume=resume_dir is not None,
            store=store,
            round_timeout_s=round_timeout,
            wait_for=wait_for,
            wait_timeout_s=wait_timeout,
            progress=not quiet,
            on_listening=listening,
            publish_to=_publish_target(publish_to, publish_token_file, publish_ca),
        )
    except FedstreamError as exc:
        _fail(exc)


@main.command()
@CONFIG_OPTION
@click.option("--server", "address", required=True, help="The server's host:port.")
@click.option("--id", "client_id", required=True, help="This client's id.")
@click.option("--token", default=None, help="This client's token.")
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Read the token from this file (or the id's entry of a tokens JSON).",
)
@click.option(
    "--ca-cert",
    type=click.Path(path_type=Path),
    default=None,
    help="CA that signed the server's certificate (PEM).",
)
@click.option(
    "--cert",
    type=click.Path(path_type=Path),
    default=None,
    help="This client's certificate, for mutual TLS.",
)
@click.option(
    "--key",
    type=click.Path(path_type=Path),
    default=None,
    help="This client's private key, for mutual TLS.",
)
@click.option("--insecure", is_flag=True, help="Connect without TLS.")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep this client's state between rounds (error feedback, control variates, "
    "local layers) in this folder, so it survives a restart [default: fedstream-state/ID].",
)
@_setting_options
def client(
    config_path: Path | None,
    address: str,
    client_id: str,
    token: str | None,
    token_file: Path | None,
    ca_cert: Path | None,
    cert: Path | None,
    key: Path | None,
    insecure: bool,
    state_dir: Path | None,
    **flags: str | None,
) -> None:
    """Join a federated run as one client; reconnects until the server ends the run."""
    from fedstream.deploy import join, load_tokens
    from fedstream.transport.grpc.client import ClientCredentials

    try:
        if token is None and token_file is not None:
            text = (_read(token_file, "--token-file") or b"").decode().strip()
            token = load_tokens(token_file).get(client_id) if text.startswith("{") else text
        if not token:
            raise ConfigError("--token", token, "a token (or --token-file)")
        credentials = (
            None
            if insecure
            else ClientCredentials(
                _read(ca_cert, "--ca-cert"), _read(cert, "--cert"), _read(key, "--key")
            )
        )
        config = _load_config(config_path, None, flags)
        stats = join(
            address,
            client_id,
            token,
            config,
            credentials=credentials,
            state_dir=state_dir or Path("fedstream-state") / client_id,
        )
    except FedstreamError as exc:
        _fail(exc)
    click.echo(f"client {client_id}: {stats.tasks} tasks over {stats.connections} connection(s)")


@main.command()
@CONFIG_OPTION
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the JSON of client id → token.",
)
@_setting_options
def tokens(config_path: Path | None, out: Path, **flags: str | None) -> None:
    """Make a random token for every client of a run config."""
    from fedstream.deploy import make_tokens
    from fedstream.simulation.engine import build_dataset, resolve_app

    try:
        config = _load_config(config_path, None, flags)
        app = resolve_app(config, None)
        made = make_tokens(app.ids() if app is not None else sorted(build_dataset(config).clients))
    except FedstreamError as exc:
        _fail(exc)
    out.write_text(json.dumps(made, indent=1))
    out.chmod(0o600)
    click.echo(f"{len(made)} tokens written to {out} (keep it secret)")


def _publish_target(
    url: str | None, token_file: Path | None, ca_file: Path | None
) -> PublishTarget | None:
    from fedstream.serving import PublishTarget

    if url is None:
        return None
    token = (_read(token_file, "--publish-token-file") or b"").decode().strip()
    if not token:
        raise ConfigError("--publish-token-file", token_file, "a file holding the publish token")
    if ca_file is not None:
        _read(ca_file, "--publish-ca")  # a clear error now rather than at round 1
    target = PublishTarget(url, token, str(ca_file) if ca_file is not None else None)
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if url.startswith("http://") and host not in ("127.0.0.1", "localhost", "[::1]"):
        log.warning("publishing to %s without TLS: the token and the models travel in clear", url)
    return target


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
@lambda command: _setting_options(command, frozenset({"data", "execution"}))
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

    values = merge(_flag_settings(flags), {"data": {"dataset": dataset}})
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


@main.command()
@click.option(
    "--store",
    type=click.Path(path_type=Path),
    default=Path("runs") / "store.sqlite",
    show_default=True,
    help="SQLite run store holding the model registry.",
)
@click.option("--run", "run_id", required=True, help="The run whose models to serve.")
@click.option(
    "--version",
    type=int,
    default=None,
    help="Serve this version only [default: follow the newest].",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--max-batch", type=int, default=64, show_default=True, help="Rows per micro-batch.")
@click.option(
    "--max-wait-ms",
    type=float,
    default=2.0,
    show_default=True,
    help="How long a request waits for others to batch with.",
)
@click.option("--max-body-bytes", type=int, default=1 << 20, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="Torch threads.")
@click.option(
    "--publish-token-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Accept models pushed by a training server holding this token.",
)
@click.option(
    "--tls-cert",
    type=click.Path(path_type=Path),
    default=None,
    help="Serve HTTPS with this certificate (PEM); needs --tls-key.",
)
@click.option("--tls-key", type=click.Path(path_type=Path), default=None, help="Its key (PEM).")
@click.option(
    "--app",
    default=None,
    metavar="MODULE:ATTR",
    help="The app whose model the run trained, for a run started from a Python object.",
)
def serve(
    store: Path,
    run_id: str,
    version: int | None,
    host: str,
    port: int,
    max_batch: int,
    max_wait_ms: float,
    max_body_bytes: int,
    threads: int,
    publish_token_file: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    app: str | None,
) -> None:
    """Serve a run's global model over HTTP(S), following new versions as training goes on."""
    import uvicorn

    from fedstream.serving import Server, create_app

    try:
        if (tls_cert is None) != (tls_key is None):
            given, missing = ("--tls-cert", "--tls-key") if tls_key is None else (
                "--tls-key", "--tls-cert")  # fmt: skip
            raise ConfigError(missing, None, f"a file beside {given}: HTTPS needs both")
        _read(tls_cert, "--tls-cert")
        _read(tls_key, "--tls-key")
    except ConfigError as exc:
        _fail(exc)
    token = None
    if publish_token_file is not None:
        token = (_read(publish_token_file, "--publish-token-file") or b"").decode().strip()
    elif not store.exists():
        _fail(ConfigError("--store", str(store), "an existing run store"))
    server = Server(
        store, run_id, version=version, follow=version is None, max_batch=max_batch,
        max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes, threads=threads,
        publish_token=token or None, app=app,
    )  # fmt: skip
    try:
        server.store.model(run_id, version)
    except KeyError as exc:
        if version is not None:
            _fail(ConfigError("--version", version, str(exc.args[0])))
    uvicorn.run(
        create_app(server), host=host, port=port, log_level="warning",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )  # fmt: skip


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
    for column in ("run", "status", "rounds", "of", "strategy", "dataset", "started"):
        table.add_column(column)
    for row in RunStore(store).runs():
        config = row["config"]
        table.add_row(
            row["id"],
            row["status"],
            str(row["rounds_done"]),
            str(config.get("rounds", "")),
            str(config.get("strategy", "")),
            str(config.get("dataset", "")),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created"])),
        )
    Console().print(table)


@runs.command("show")
@click.argument("run_id")
@STORE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def runs_show(run_id: str, store: Path, as_json: bool) -> None:
    """One run: its settings, status and every round's metrics."""
    import json

    from rich.console import Console
    from rich.table import Table

    from fedstream.store.runs import RunStore

    try:
        if not store.exists():
            raise ConfigError("--store", str(store), "an existing run store")
        run = RunStore(store).run(run_id)
    except ConfigError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(run, indent=1))
        return
    console = Console()
    console.print(
        f"[bold]{run_id}[/]: {run['status']}, {run['rounds_done']} of "
        f"{run['config'].get('rounds')} rounds, output {run['output_dir']}"
    )
    if run["error"]:
        console.print(f"[red]{run['error']}[/]")
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


if __name__ == "__main__":
    main()
