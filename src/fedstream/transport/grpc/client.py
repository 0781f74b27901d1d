"""The client's end of a deployment: dial the server, answer its requests, stay connected.

``run_client`` keeps one ``Session`` stream open. It trains and evaluates with the given
``Trainer`` on the client's own ``ClientData``, encodes updates exactly as the simulation
does (``prepare_upload``), and keeps its secure-aggregation state on the device
(``SecureDevice``). A heartbeat goes out every few seconds. After a network loss or a
server restart it reconnects with exponential backoff; a refusal of its credentials, or
the server saying the run is over, ends it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import queue
import re
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from fedstream import checks
from fedstream.client.algorithms import split_extras
from fedstream.client.base import FitTask, Trainer, evaluate_client
from fedstream.client.encode import receive_params, upload_mask
from fedstream.client.runtime import (
    finish_fit,
    head_fit,
    own_model,
    personal_fit,
    start_fit,
)
from fedstream.client.state import EMPTY, ClientState, DiskClientState
from fedstream.compression.codecs import decode_broadcast
from fedstream.data.base import ClientData
from fedstream.data.stream import Stream
from fedstream.errors import FedstreamError
from fedstream.params import Params
from fedstream.secure.secagg import Identity
from fedstream.secure.session import SecureDevice
from fedstream.transport.grpc import fedstream_pb2 as pb
from fedstream.transport.grpc import fedstream_pb2_grpc as pb_grpc
from fedstream.transport.grpc.codec import fit_config_from_dict
from fedstream.transport.grpc.framing import CHUNK_BYTES, Assembler, ProtocolError, chunks
from fedstream.transport.grpc.lane import (
    LANE_MIN_BYTES,
    LaneError,
    client_tls,
    host_of,
    send_by_lane,
)
from fedstream.transport.grpc.server import PROTOCOL
from fedstream.transport.inprocess import describe_exception

log = logging.getLogger("fedstream.client")


class ClientRefused(FedstreamError, PermissionError):
    """The server refused this client (wrong token, unknown id, other protocol, or another
    process holding this client's session)."""


class ServerUnreachable(FedstreamError, ConnectionError):
    """No session could be had with the server within the give-up time, or the TLS
    settings of the two sides do not match (which waiting would not change)."""


MAX_DATA_TIME_S = 10.0 * 365 * 24 * 3600  # a task's start, in the run's seconds: ten years
DEFAULT_GIVE_UP_S = 600.0  # a client's give-up time without a connection (0 or None: never)
SECOND_SESSION_GRACE_S = 60.0  # how long a client retries while its id has a live session
TLS_ATTEMPTS = 3  # TLS mismatches in a row before a client gives up


def connect_failure(details: str, tls: bool, address: str) -> tuple[str, bool]:
    """What a failed connection to ``address`` means, from gRPC's ``details``, for a
    person; and whether it is a TLS mismatch between the two sides."""
    if "WRONG_VERSION_NUMBER" in details:
        return (
            f"TLS handshake failed: {address} does not speak TLS (is the server running "
            "with --insecure?)",
            True,
        )
    if "handshake failed" in details.lower() or "CERTIFICATE_VERIFY" in details:
        cause = details.rsplit("SSL_ERROR_SSL:", 1)[-1].strip()
        return (
            f"TLS handshake failed: the certificate of {address} cannot be verified with the "
            f"CA given (--ca-cert), or is not for this host name ({cause})",
            True,
        )
    if "Socket closed" in details and not tls:
        return (
            f"{address} closed the connection during the handshake: if the server uses "
            "TLS, give this client --ca-cert instead of --insecure",
            True,
        )
    if "Connection refused" in details:
        return (
            f"connection refused: nothing listens at {address} (the server is not started "
            "yet, has finished, or the address is wrong)",
            False,
        )
    if "DNS resolution failed" in details:
        return f"cannot resolve the host name of {address}", False
    return details or "connection lost", False


@dataclass(frozen=True)
class ClientCredentials:
    """TLS for a client: the CA to check the server against, and for mutual TLS the
    client's own certificate chain and key (all PEM)."""

    root_ca: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None


@dataclass
class ClientStats:
    """What a client did, for logs and tests."""

    connections: int = 0
    tasks: int = 0
    refusals: int = 0
    lane_uploads: int = 0  # updates that went by the server's bulk lane


def _channel(address: str, credentials: ClientCredentials | None) -> grpc.Channel:
    options = [
        ("grpc.max_receive_message_length", 4 * CHUNK_BYTES),
        ("grpc.max_send_message_length", 4 * CHUNK_BYTES),
        ("grpc.keepalive_time_ms", 10_000),
    ]
    if credentials is None:
        return grpc.insecure_channel(address, options=options)
    tls = grpc.ssl_channel_credentials(
        root_certificates=credentials.root_ca,
        private_key=credentials.private_key,
        certificate_chain=credentials.certificate_chain,
    )
    return grpc.secure_channel(address, tls, options=options)


class _Device:
    """The client across tasks and reconnects: its data, trainer, secure-sum state, and its
    durable state (``client.state``). With ``state_root`` that state is kept on disk, in a
    folder per run (``state_root/<run id>``), so a restart continues it and a new run
    starts afresh."""

    def __init__(
        self,
        client_id: str,
        data: ClientData,
        trainer: Trainer,
        state_root: Path | None = None,
        identity: Identity | None = None,
        corrupt_fraction: float = 0.0,
        slowdown_s: float = 0.0,
        stream: Stream | None = None,
    ) -> None:
        self.client_id = client_id
        self.slowdown_s = slowdown_s
        self.stream = stream
        self.data = data
        self.trainer = trainer
        self.secagg = SecureDevice(client_id, identity, corrupt_fraction)
        self.state_root = state_root
        self.run_id: str | None = None
        self.store: DiskClientState | None = None
        self.state: ClientState = EMPTY

    def enter_run(self, run_id: str) -> None:
        """The server named its run: keep this run's state (read back from disk)."""
        if run_id == self.run_id:
            return
        self.run_id = run_id
        self.store = (
            None
            if self.state_root is None
            else DiskClientState(self.state_root / run_folder(run_id))
        )
        self.state = self.store.load() if self.store is not None else EMPTY

    def keep(self, state: ClientState) -> None:
        """The client's next state, written to its disk before anything is sent."""
        if state is not self.state and self.store is not None:
            self.store.save(state)
        self.state = state

    def _data(self, data_time: object) -> ClientData:
        """The data a task trains on: with a stream, the window at the task's start (the
        run's seconds, from the server, bounded before use), else all of it."""
        if self.stream is None:
            return self.data
        if not (
            isinstance(data_time, int | float)
            and not isinstance(data_time, bool)
            and math.isfinite(data_time)
            and 0 <= data_time <= MAX_DATA_TIME_S
        ):
            raise ProtocolError(
                f"data_time={data_time!r} is invalid: expected the task's start in seconds, "
                f"0 to {MAX_DATA_TIME_S:g} (a streaming client reads its window then)"
            )
        return self.stream.window_at(self.client_id, float(data_time))

    def handle(self, request: pb.Request, payload: bytes) -> tuple[dict[str, Any], bytes]:
        header = json.loads(request.header_json or "{}")
        if request.kind == "fit":
            config = fit_config_from_dict(header["config"])
            task = FitTask(self.client_id, request.round, config)
            data = self._data(header.get("data_time"))
            params = receive_params(Params.from_bytes(payload), config)
            (started,) = head_fit(
                self.trainer, [data], [start_fit(*split_extras(params), task, self.state)]
            )
            update = self.trainer.fit(started.start, started.task, data)
            mask = upload_mask(params, config)
            (trained,) = personal_fit(self.trainer, [data], [started], [self.state])
            sent, state = finish_fit(update, started, trained, mask)
            self.keep(state)
            time.sleep(self.slowdown_s * data.num_train * config.local_epochs)
            body = {"round": sent.round, "weight": sent.weight, "metrics": dict(sent.metrics)}
            if config.secure_aggregation:
                self.secagg.hold(sent)
                return {**body, "weight": 0.0}, Params({}).to_bytes()
            return {**body, "extras": dict(sent.extras)}, sent.payload.to_bytes()
        if request.kind == "evaluate":
            received = decode_broadcast(Params.from_bytes(payload), header.get("broadcast", "none"))
            personal = header.get("personalize")
            result = evaluate_client(
                self.trainer, received, self.client_id, request.round, self.data,
                fit_config_from_dict(personal) if personal is not None else None,
                own_model(received, self.state),
            )  # fmt: skip
            return {"num_examples": result.num_examples, "metrics": dict(result.metrics)}, b""
        answer = self.secagg.answer(str(header.get("stage")), request.round, payload)
        return {}, answer


def run_client(
    address: str,
    client_id: str,
    token: str,
    data: ClientData,
    trainer: Trainer,
    *,
    credentials: ClientCredentials | None = None,
    stop: threading.Event | None = None,
    max_backoff_s: float = 10.0,
    give_up_after_s: float | None = DEFAULT_GIVE_UP_S,
    max_payload_bytes: int = 2 << 30,
    state_dir: str | Path | None = None,
    identity: Identity | None = None,
    corrupt_fraction: float = 0.0,
    second_session_grace_s: float = SECOND_SESSION_GRACE_S,
    slowdown_s: float = 0.0,
    stream: Stream | None = None,
) -> ClientStats:
    """Serve the run at ``address`` as ``client_id`` until the server says it is over.

    Reconnects after failures with backoff 0.2 s, 0.4 s, … up to ``max_backoff_s``, saying
    each time why the last attempt failed; it gives up (``ServerUnreachable``) after
    ``give_up_after_s`` without a connection (0 or ``None``: never), and at once when the
    TLS settings of the two sides do not match. While another process holds a live session
    under this client's id it retries for ``second_session_grace_s``, then raises
    ``ClientRefused``. With
    ``state_dir`` the client's durable state (error-feedback residuals, control variates,
    local model entries) is kept on disk, in a folder per run under it, and read back when
    the client restarts; without it, it lasts as long as this call. ``identity`` (its
    signing key and the roster of the others') lets it take part in SecAgg+, assuming
    ``corrupt_fraction`` of its neighbours collude with the server. ``slowdown_s`` seconds
    per example and epoch are waited after each training task, to play a slower device.
    With a ``stream`` (``data.stream``) each task trains on the window of ``data`` at the
    task's start, which the server's request names.
    """
    data.check(client_id)
    checks.non_negative("slowdown_s", slowdown_s)
    device = _Device(
        client_id, data, trainer, Path(state_dir) if state_dir else None, identity,
        corrupt_fraction, slowdown_s, stream,
    )  # fmt: skip
    stats = ClientStats()
    stop = stop or threading.Event()
    backoff = 0.2
    last_connected = time.monotonic()
    taken_since: float | None = None  # the first refusal in a row for a live session
    tls_failures = 0
    mode = "plaintext (--insecure)" if credentials is None else "TLS"
    log.warning("client %s: connecting to %s over %s", client_id, address, mode)
    while not stop.is_set():
        try:
            finished = _session(address, token, device, credentials, stop, stats, max_payload_bytes)
            last_connected, taken_since, tls_failures = time.monotonic(), None, 0
            if finished:
                return stats
            backoff = 0.2
            reason = "connection lost"
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION):
                raise ClientRefused(details) from None
            if stats.connections and code is grpc.StatusCode.UNAVAILABLE and _said_finished(exc):
                return stats
            now = time.monotonic()
            if code is grpc.StatusCode.ALREADY_EXISTS:
                taken_since = taken_since if taken_since is not None else now
                if now - taken_since > second_session_grace_s:
                    raise ClientRefused(
                        f"{details}. Gave up after {second_session_grace_s:g} s: another "
                        f"process is connected as client {client_id!r}"
                    ) from None
            reason, tls_mismatch = connect_failure(details, credentials is not None, address)
            tls_failures = tls_failures + 1 if tls_mismatch else 0
            if tls_failures >= TLS_ATTEMPTS:
                raise ServerUnreachable(f"client {client_id!r}: {reason}") from None
        waited = time.monotonic() - last_connected
        if give_up_after_s and waited > give_up_after_s:
            raise ServerUnreachable(
                f"client {client_id!r}: no session with {address} for {give_up_after_s:g} s; "
                f"the last attempt: {reason}"
            )
        log.warning("client %s: %s; retrying in %.1f s", client_id, reason, backoff)
        stop.wait(backoff)
        backoff = min(backoff * 2, max_backoff_s)
    return stats


def run_folder(run_id: str) -> str:
    """A folder name for ``run_id``: itself when it is a plain name, else its SHA-256."""
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", run_id):
        return run_id
    return hashlib.sha256(run_id.encode()).hexdigest()


def _said_finished(exc: grpc.RpcError) -> bool:
    details = exc.details() if hasattr(exc, "details") else ""
    return "run has finished" in (details or "")


def _session(
    address: str,
    token: str,
    device: _Device,
    credentials: ClientCredentials | None,
    stop: threading.Event,
    stats: ClientStats,
    max_payload_bytes: int,
) -> bool:
    """One connection; ``True`` when the server ended the run, ``False`` on a lost stream."""
    outbound: queue.Queue[pb.ClientMessage | None] = queue.Queue()
    outbound.put(
        pb.ClientMessage(hello=pb.Hello(client_id=device.client_id, token=token, protocol=PROTOCOL))
    )
    beating = threading.Event()

    def messages() -> Iterator[pb.ClientMessage]:
        while True:
            message = outbound.get()
            if message is None:
                return
            yield message

    def heartbeat(interval: float) -> None:
        while not beating.wait(interval):
            outbound.put(pb.ClientMessage(heartbeat=pb.Heartbeat(sent_ms=int(time.time() * 1000))))

    lane = _LaneRoute(address, credentials)
    with _channel(address, credentials) as channel:
        stub = pb_grpc.FedstreamStub(channel)  # type: ignore[no-untyped-call]
        stream = stub.Session(messages())
        request: pb.Request | None = None
        assembler: Assembler | None = None
        try:
            for message in stream:
                if stop.is_set():
                    stream.cancel()
                    return True
                kind = message.WhichOneof("body")
                if kind == "welcome":
                    device.enter_run(message.welcome.run_id)
                    stats.connections += 1
                    threading.Thread(
                        target=heartbeat, args=(message.welcome.heartbeat_s,), daemon=True
                    ).start()
                elif kind == "refusal":
                    if message.refusal.reason == "run finished":
                        return True
                    stats.refusals += 1
                    log.warning("server refused an answer: %s", message.refusal.reason)
                elif kind == "request":
                    request = message.request
                    assembler = Assembler(max_payload_bytes, f"request {request.task_id}")
                elif kind == "chunk" and request is not None and assembler is not None:
                    payload = assembler.add(message.chunk)
                    if payload is not None:
                        stats.lane_uploads += _answer(device, request, payload, outbound, lane)
                        stats.tasks += 1
                        request, assembler = None, None
                else:
                    raise ProtocolError(f"unexpected {kind!r} message from the server")
        finally:
            beating.set()
            outbound.put(None)
    return False


class _LaneRoute:
    """How this client reaches the server's lane (``grpc.lane``): the host it dials, with
    TLS when its stream has TLS. The TLS context is made on first use."""

    def __init__(self, address: str, credentials: ClientCredentials | None) -> None:
        self.host = host_of(address)
        self._credentials = credentials
        self._tls: ssl.SSLContext | None = None

    def tls(self) -> ssl.SSLContext | None:
        c = self._credentials
        if c is not None and self._tls is None:
            self._tls = client_tls(c.root_ca, c.certificate_chain, c.private_key)
        return self._tls

    def send(self, request: pb.Request, body: bytes) -> bool:
        """Upload ``body`` by the lane if the request offers one and ``body`` is large
        enough; whether it went. A failed lane is logged, and the stream carries it."""
        if len(body) < LANE_MIN_BYTES:
            return False
        header = json.loads(request.header_json or "{}")
        offer = header.get("lane") if isinstance(header, dict) else None
        if not isinstance(offer, dict):
            return False
        port, ticket = offer.get("port"), offer.get("ticket")
        if not (isinstance(port, int) and 0 < port < 65536 and isinstance(ticket, str)):
            log.warning("ignored a malformed lane offer: port %r", port)
            return False
        try:
            send_by_lane(self.host, port, ticket[:256], body, self.tls())
        except LaneError as exc:
            log.warning("upload for task %s goes by the stream: %s", request.task_id, exc)
            return False
        return True


def _answer(
    device: _Device,
    request: pb.Request,
    payload: bytes,
    outbound: queue.Queue[Any],
    lane: _LaneRoute,
) -> bool:
    """Run one request and queue the reply (or the error that stopped it); a large fit
    update goes by the server's lane when it offers one (then ``True``)."""
    try:
        header, body = device.handle(request, payload)
        error = ""
    except Exception as exc:
        header, body, error = {}, b"", describe_exception(exc)
    by_lane = request.kind == "fit" and not error and lane.send(request, body)
    if by_lane:
        header, body = {**header, "lane_bytes": len(body)}, b""
    reply = pb.Reply(
        task_id=request.task_id,
        run_id=request.run_id,
        round=request.round,
        kind=request.kind,
        header_json=json.dumps(header),
        error=error,
    )
    outbound.put(pb.ClientMessage(reply=reply))
    for chunk in chunks(body):
        outbound.put(pb.ClientMessage(chunk=chunk))
    return by_lane
