"""``fedstream serve``: the newest model of a run over HTTP(S)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fedstream.cli.options import fail, read_file
from fedstream.cli.root import main
from fedstream.errors import ConfigError

if TYPE_CHECKING:
    from fedstream.serving.personal import PersonalSource


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
@click.option(
    "--client",
    "client_id",
    default=None,
    help="Serve this client's personal model (its own layers, or Ditto's whole model, over "
    "each global version) [default: the global model].",
)
@click.option(
    "--client-state",
    type=click.Path(path_type=Path),
    default=None,
    help="With --client: the client's own state folder (a deployed client's --state-dir) "
    "[default: the simulated run's newest checkpoint].",
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
    client_id: str | None,
    client_state: Path | None,
) -> None:
    """Serve a run's model (or one client's personal model) over HTTP(S), following it.

    Each new version the run publishes is swapped in as training goes on, unless
    --version pins one."""
    import uvicorn

    from fedstream.serving import Server, create_app

    try:
        if (tls_cert is None) != (tls_key is None):
            given, missing = ("--tls-cert", "--tls-key") if tls_key is None else (
                "--tls-key", "--tls-cert")  # fmt: skip
            raise ConfigError(missing, None, f"a file beside {given}: HTTPS needs both")
        read_file(tls_cert, "--tls-cert")
        read_file(tls_key, "--tls-key")
    except ConfigError as exc:
        fail(exc)
    token = None
    if publish_token_file is not None:
        token = (read_file(publish_token_file, "--publish-token-file") or b"").decode().strip()
    elif not store.exists():
        fail(ConfigError("--store", str(store), "an existing run store"))
    if token is None and not is_loopback(host):
        fail(
            ConfigError(
                "--host",
                host,
                "127.0.0.1 or ::1 without --publish-token-file: pinning and following change "
                "what is served, and need that token on any other address",
            )
        )
    try:
        personal = personal_source(store, run_id, client_id, client_state)
    except ConfigError as exc:
        fail(exc)
    server = Server(
        store, run_id, version=version, follow=version is None, max_batch=max_batch,
        max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes, threads=threads,
        publish_token=token or None, app=app, personal=personal,
    )  # fmt: skip
    try:
        server.store.model(run_id, version)
    except KeyError as exc:
        if version is not None:
            fail(ConfigError("--version", version, str(exc.args[0])))
    uvicorn.run(
        create_app(server), host=host, port=port, log_level="warning",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )  # fmt: skip


def personal_source(
    store: Path, run_id: str, client_id: str | None, client_state: Path | None
) -> PersonalSource | None:
    """Whose personal model to serve, checked before the server starts: the client's
    state must be readable now and hold something of its own."""
    from fedstream.serving.personal import PersonalSource
    from fedstream.store.runs import RunStore

    if client_id is None:
        if client_state is not None:
            raise ConfigError("--client", None, "the client whose --client-state this is")
        return None
    if client_state is not None:
        if not client_state.is_dir():
            raise ConfigError("--client-state", str(client_state), "a client's state folder")
        source = PersonalSource(client_id, state_dir=client_state)
    else:
        folder = RunStore(store).run(run_id).get("output_dir") if store.exists() else None
        if not folder:
            raise ConfigError(
                "--client-state",
                None,
                f"the client's state folder: run {run_id!r} has no run folder in {store} to "
                "read a simulated client's state from",
            )
        source = PersonalSource(client_id, run_folder=Path(folder))
    source.state()
    return source


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (a loopback address or localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
