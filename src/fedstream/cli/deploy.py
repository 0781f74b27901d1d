"""``fedstream server``, ``client`` and ``tokens``: a deployment over gRPC."""

from __future__ import annotations

import time
from pathlib import Path

import click

from fedstream.cli.options import (
    CONFIG_OPTION,
    OVERWRITE_OPTION,
    fail,
    load_config,
    log,
    publish_options,
    publish_target,
    read_file,
    setting_options,
    tracking_callbacks,
    tracking_options,
)
from fedstream.cli.root import main
from fedstream.errors import ConfigError, FedstreamError


def warn_insecure(side: str) -> None:
    """Say loudly, on stderr and in the log, what --insecure gives away."""
    message = (
        f"WARNING: this {side} runs WITHOUT TLS (--insecure): client tokens, model "
        "parameters and updates cross the network in the clear, readable and changeable by "
        "anyone on the path. Use it only on a network you trust entirely."
    )
    click.secho(message, fg="red", bold=True, err=True)
    log.warning(message)


@main.command()
@CONFIG_OPTION
@click.option(
    "--tokens",
    "tokens_path",
    type=click.Path(path_type=Path),
    required=True,
    help="JSON file of client id → token, or → salted hash (server-tokens.json from "
    "fedstream tokens, so the server holds no token); unknown clients are refused.",
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
    "--bulk-port",
    type=int,
    default=None,
    help="Also take updates of 1 MiB or more on this port of the same host, beside the gRPC "
    "stream and several times faster (0: any free port; TLS as the stream). Off by default.",
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
@OVERWRITE_OPTION
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
    help="Seconds a round (in an asynchronous run, a task) waits for answers before "
    "recording the silent as dropped.",
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
@publish_options
@tracking_options
@setting_options
def server(
    config_path: Path | None,
    tokens_path: Path,
    listen: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    client_ca: Path | None,
    insecure: bool,
    bulk_port: int | None,
    output: Path | None,
    resume_dir: Path | None,
    overwrite: bool,
    store: Path | None,
    round_timeout: float,
    wait_for: int | None,
    wait_timeout: float,
    quiet: bool,
    publish_to: str | None,
    publish_token_file: Path | None,
    publish_ca: Path | None,
    tensorboard_dir: Path | None,
    mlflow_uri: str | None,
    **flags: str | None,
) -> None:
    """Serve a federated run to clients that connect over gRPC (TLS unless --insecure)."""
    from fedstream.deploy import load_tokens, serve
    from fedstream.transport.grpc.server import ServerCredentials

    try:
        tokens = load_tokens(tokens_path)
        credentials = None
        if insecure:
            warn_insecure("server")
        else:
            if tls_cert is None or tls_key is None:
                raise ConfigError(
                    "--tls-cert",
                    None,
                    "a certificate and --tls-key (or --insecure to serve "
                    "without TLS); docs/deployment.md shows how to make them",
                )
            credentials = ServerCredentials(
                read_file(tls_cert, "--tls-cert") or b"",
                read_file(tls_key, "--tls-key") or b"",
                read_file(client_ca, "--client-ca"),
            )
        if resume_dir is not None:
            config, folder = None, resume_dir
        else:
            config = load_config(config_path, None, flags)
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
            overwrite=overwrite,
            store=store,
            round_timeout_s=round_timeout,
            wait_for=wait_for,
            wait_timeout_s=wait_timeout,
            progress=not quiet,
            on_listening=listening,
            publish_to=publish_target(publish_to, publish_token_file, publish_ca),
            callbacks=tracking_callbacks(tensorboard_dir, mlflow_uri),
            bulk_port=bulk_port,
        )
    except FedstreamError as exc:
        fail(exc)


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
@click.option(
    "--identity",
    "identity_file",
    type=click.Path(path_type=Path),
    default=None,
    help="This client's SecAgg+ signing key (hex, or the id's entry of identities.json "
    "from fedstream tokens); needed for secure.scheme secagg+.",
)
@click.option(
    "--roster",
    "roster_file",
    type=click.Path(path_type=Path),
    default=None,
    help="The others' public signing keys (roster.json from fedstream tokens) "
    "[default: roster.json beside --identity].",
)
@click.option(
    "--give-up-after",
    "give_up_after",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Exit (status 1) after this many seconds without a session with the server "
    "(0 = keep trying for ever).",
)
@click.option(
    "--slowdown",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to wait per example and epoch after each training task: plays a slower "
    "device, for demos and tests of an asynchronous run.",
)
@setting_options
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
    identity_file: Path | None,
    roster_file: Path | None,
    give_up_after: float,
    slowdown: float,
    **flags: str | None,
) -> None:
    """Join a federated run as one client; reconnects until the server ends the run, or
    gives up after --give-up-after seconds without it."""
    from fedstream.deploy import ROSTER_FILE, join, load_identities, load_tokens
    from fedstream.transport.grpc.client import ClientCredentials

    try:
        if token is None and token_file is not None:
            text = (read_file(token_file, "--token-file") or b"").decode().strip()
            token = load_tokens(token_file).get(client_id) if text.startswith("{") else text
        if not token:
            raise ConfigError("--token", token, "a token (or --token-file)")
        if insecure:
            warn_insecure("client")
        credentials = (
            None
            if insecure
            else ClientCredentials(
                read_file(ca_cert, "--ca-cert"), read_file(cert, "--cert"), read_file(key, "--key")
            )
        )
        config = load_config(config_path, None, flags)
        identity = (
            load_identities(
                client_id, identity_file, roster_file or identity_file.parent / ROSTER_FILE
            )
            if identity_file is not None
            else None
        )
        stats = join(
            address,
            client_id,
            token,
            config,
            credentials=credentials,
            state_dir=state_dir or Path("fedstream-state") / client_id,
            identity=identity,
            give_up_after_s=give_up_after,
            slowdown_s=slowdown,
        )
    except FedstreamError as exc:
        fail(exc)
    lane = f", {stats.lane_uploads} update(s) by the bulk lane" if stats.lane_uploads else ""
    click.echo(
        f"client {client_id}: {stats.tasks} tasks over {stats.connections} connection(s){lane}"
    )


@main.command()
@CONFIG_OPTION
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the JSON of client id → token.",
)
@setting_options
def tokens(config_path: Path | None, out: Path, **flags: str | None) -> None:
    """Make a random token for every client of a run config, and each client's SecAgg+
    signing key (identities.json) with the roster of their public keys (roster.json),
    beside it."""
    from fedstream.deploy import make_tokens, write_identities, write_tokens
    from fedstream.simulation.engine import build_dataset, resolve_app

    try:
        config = load_config(config_path, None, flags)
        app = resolve_app(config, None)
        made = make_tokens(app.ids() if app is not None else sorted(build_dataset(config).clients))
    except FedstreamError as exc:
        fail(exc)
    write_tokens(out, made)
    write_identities(out.parent, sorted(made))
    click.echo(
        f"{len(made)} tokens written to {out}, their salted hashes to server-tokens.json "
        "(the server needs only these), signing keys to identities.json and their public "
        "keys to roster.json beside it. Give each client its own token and key and the "
        "roster, then delete tokens.json and identities.json from the server"
    )
