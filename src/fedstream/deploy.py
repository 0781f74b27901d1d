"""Deployment: the same round loop as the simulation, with clients in other processes or on
other machines, over gRPC.

- :func:`serve` runs a whole federated run as a server: it listens, waits for the
  clients, and drives the rounds through ``simulate`` with a ``GrpcTransport``. The
  checkpoints, run store, resume and outputs are the same as a simulated run's.
- :func:`join` is one client: it loads its own data and model and answers the server's
  requests until the run is over.

In this first form every party reads the same run config. The server uses it for the
model, the strategy and the list of client ids. A client uses it to build the model and,
when it has no data of its own, to take its share of the configured data set, which is
how the tests and the guide run a whole deployment on one machine.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import torch

if TYPE_CHECKING:
    from fedstream.serving.publish import PublishTarget

from fedstream.app import App
from fedstream.client.base import Trainer
from fedstream.client.vectorized import VectorizedTrainer
from fedstream.data.base import ClientData
from fedstream.errors import ConfigError
from fedstream.secure.secagg import Identity, load_identity, make_identities
from fedstream.simulation.config import SimulationConfig
from fedstream.simulation.engine import (
    Setup,
    SimulationResult,
    build,
    build_dataset,
    client_stream,
    resolve_app,
    simulate,
)
from fedstream.tracking.base import RunCallback
from fedstream.transport.grpc.client import (
    DEFAULT_GIVE_UP_S,
    ClientCredentials,
    ClientStats,
    run_client,
)
from fedstream.transport.grpc.lane import BulkLane, host_of, server_tls
from fedstream.transport.grpc.server import (
    FedstreamService,
    GrpcTransport,
    ServerCredentials,
    hash_token,
    start_server,
)

log = logging.getLogger("fedstream.deploy")


def make_tokens(client_ids: list[str]) -> dict[str, str]:
    """A fresh random token (32 bytes, URL-safe) for each client."""
    return {client_id: secrets.token_urlsafe(32) for client_id in client_ids}


SERVER_TOKENS_FILE = "server-tokens.json"


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only from the first byte: into a
    temporary file that ``mkstemp`` creates 0600, then renamed over ``path``."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_tokens(out: Path, tokens: Mapping[str, str]) -> None:
    """The clients' tokens at ``out`` (to hand each client its own) and, beside it,
    ``server-tokens.json``: the salted hashes the server needs, so its disk holds no
    token. Both are written owner-only from the start."""
    write_secret(out, json.dumps(dict(tokens), indent=1))
    hashed = {client_id: hash_token(token) for client_id, token in tokens.items()}
    write_secret(out.parent / SERVER_TOKENS_FILE, json.dumps(hashed, indent=1))


IDENTITIES_FILE = "identities.json"
ROSTER_FILE = "roster.json"


def write_identities(folder: Path, client_ids: list[str]) -> None:
    """Provision SecAgg+ identities beside the tokens: ``identities.json`` (client id →
    private signing key, secret: each client should get only its own entry) and
    ``roster.json`` (client id → public key, which every client gets)."""
    private, public = make_identities(client_ids)
    write_secret(folder / IDENTITIES_FILE, json.dumps(private, indent=1))
    (folder / ROSTER_FILE).write_text(json.dumps(public, indent=1))


def load_identities(client_id: str, identity_file: Path, roster_file: Path) -> Identity:
    """A client's identity from its key file (a JSON of id → key, or the key alone, in hex)
    and the roster (a JSON of id → public key, in hex)."""
    try:
        text = identity_file.read_text().strip()
        roster = json.loads(roster_file.read_text())
        key = json.loads(text).get(client_id) if text.startswith("{") else text
    except FileNotFoundError as exc:
        raise ConfigError("--identity", str(exc.filename), "an existing file") from None
    except (ValueError, AttributeError) as exc:
        raise ConfigError("--identity", str(identity_file), f"JSON or hex ({exc})") from None
    if not isinstance(key, str) or not isinstance(roster, dict):
        raise ConfigError("--identity", client_id, f"an entry for this client in {identity_file}")
    return load_identity(client_id, key, roster)


def load_tokens(path: Path) -> dict[str, str]:
    """A JSON object of client id → token."""
    try:
        tokens = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("--tokens", str(path), "an existing JSON file of id → token") from None
    except ValueError as exc:
        raise ConfigError("--tokens", str(path), f"valid JSON ({exc})") from None
    if not isinstance(tokens, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in tokens.items()
    ):
        raise ConfigError("--tokens", str(path), "a JSON object of client id → non-empty token")
    return tokens


def deployment_id(out: Path, resume: bool) -> str:
    """The run id the server announces to its clients: the run folder's name and a random
    suffix, made when the run starts and kept in the folder, so a resumed run is the same
    run to its clients (they continue their saved state) and a new run in a reused folder
    is not (they start afresh)."""
    path = out / "deployment-id"
    if resume and path.exists():
        return path.read_text().strip()
    identity = f"{out.name}-{secrets.token_hex(4)}"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(identity + "\n")
    return identity


def serve(
    config: SimulationConfig | None,
    tokens: Mapping[str, str],
    *,
    listen: str = "127.0.0.1:50051",
    credentials: ServerCredentials | None = None,
    output_dir: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    store: str | Path | None = None,
    round_timeout_s: float = 120.0,
    wait_for: int | None = None,
    wait_timeout_s: float = 300.0,
    progress: bool = False,
    on_listening: Callable[[int], None] | None = None,
    publish_to: PublishTarget | None = None,
    app: App | None = None,
    callbacks: Sequence[RunCallback] = (),
    bulk_port: int | None = None,
) -> SimulationResult:
    """Run the federated training in ``config`` (and ``app``, whose client data the server
    never reads) as a gRPC server on ``listen``.

    It listens once the run folder is claimed (``simulate``: one run per folder; a new run
    needs an empty one or ``overwrite``), then waits up to ``wait_timeout_s`` for
    ``wait_for`` clients (default: all configured clients) before round 1. Every configured
    client needs a token; ``credentials=None`` serves without TLS, which only tests and a
    trusted network should do. With ``resume`` the run in ``output_dir`` continues from its
    newest checkpoint (``config`` may then be ``None``: the run's own is used).

    With ``bulk_port`` (0: any free port) clients upload updates of 1 MiB or more by a
    lane beside the stream on that port of the same host, several times faster than the
    stream (``transport.grpc.lane``; TLS when the stream has it).
    """
    out = Path(output_dir)
    started: list[tuple[FedstreamService, grpc.Server]] = []

    def transport(setup: Setup) -> GrpcTransport:
        expected = sorted(setup.dataset.clients)
        missing = [c for c in expected if c not in tokens]
        if missing:
            raise ConfigError("--tokens", f"{len(tokens)} tokens", f"a token for {missing[:5]}")
        lane = open_lane(listen, bulk_port, credentials) if bulk_port is not None else None
        service = FedstreamService(tokens, run_id=deployment_id(out, resume), lane=lane)
        server, port = start_server(service, listen, credentials)
        started.append((service, server))
        log.info("listening on port %d", port)
        if on_listening is not None:
            on_listening(port)
        service.wait_for(wait_for if wait_for is not None else len(expected), wait_timeout_s)
        return GrpcTransport(service, round_timeout_s)

    try:
        return simulate(
            None if resume else config,
            app=app,
            output_dir=out,
            resume=resume,
            overwrite=overwrite,
            store=store,
            progress=progress,
            transport_factory=transport,
            publish_to=publish_to,
            callbacks=callbacks,
        )
    finally:
        for service, server in started:
            service.finish()
            server.stop(grace=2.0).wait()
            if service.lane is not None:
                service.lane.close()


def open_lane(listen: str, port: int, credentials: ServerCredentials | None) -> BulkLane:
    """The bulk lane on ``listen``'s host and ``port``, with the stream's TLS if any."""
    host = host_of(listen)
    if not 0 <= port < 65536:
        raise ConfigError("bulk_port", port, "a port number in [0, 65535] (0: any free port)")
    tls = (
        server_tls(credentials.certificate_chain, credentials.private_key, credentials.client_ca)
        if credentials is not None
        else None
    )
    try:
        return BulkLane(host, port, tls)
    except OSError as exc:
        raise ConfigError("bulk_port", port, f"a port this process may listen on ({exc})") from exc


def client_setup(
    config: SimulationConfig, client_id: str, app: App | None = None
) -> tuple[ClientData, Trainer]:
    """The model trainer for ``config`` and this client's data: from ``app`` (or the one
    ``config.model.app`` names), which reads this client's data only, or this client's share of
    the built-in data set."""
    user_app = resolve_app(config, app)
    if user_app is not None:
        data = user_app.client_data(client_id)
        return data, user_app.trainer(user_app.build_model(config.execution.seed))
    setup = build(config)
    if client_id not in setup.dataset.clients:
        known = sorted(setup.dataset.clients)
        raise ConfigError("--id", client_id, f"one of the configured clients {known[:3]}…")
    trainer = setup.trainer
    if isinstance(trainer, VectorizedTrainer):
        trainer = trainer.sequential  # one client: the sequential trainer does the same maths
    return setup.dataset.clients[client_id], trainer


def join(
    server: str,
    client_id: str,
    token: str,
    config: SimulationConfig,
    *,
    data: ClientData | None = None,
    credentials: ClientCredentials | None = None,
    stop: threading.Event | None = None,
    give_up_after_s: float | None = DEFAULT_GIVE_UP_S,
    state_dir: str | Path | None = None,
    app: App | None = None,
    identity: Identity | None = None,
    slowdown_s: float = 0.0,
) -> ClientStats:
    """Take part in the run at ``server`` as ``client_id`` until it is over. Uses
    ``config.execution.threads`` torch threads (one per process is fastest for small models). The
    client's durable state is kept in ``state_dir`` (see ``run_client``); ``identity``
    (``load_identities``) is what SecAgg+ needs of it; ``slowdown_s`` plays a slower device
    (``run_client``). With ``config.stream`` the client's data streams in as the run's
    seconds pass, as in the simulation (``data.stream``)."""
    torch.set_num_threads(config.execution.threads)
    own, trainer = client_setup(config, client_id, app)
    stream = client_stream(config, build_dataset(config)) if config.stream.window else None
    return run_client(
        server,
        client_id,
        token,
        data if data is not None else own,
        trainer,
        credentials=credentials,
        stop=stop,
        give_up_after_s=give_up_after_s,
        state_dir=state_dir,
        identity=identity,
        corrupt_fraction=config.secure.corrupt_fraction,
        slowdown_s=slowdown_s,
        stream=stream if data is None else None,
    )
