"""The server's end of a deployment: a gRPC service that clients dial into, and a
``Transport`` over it for the round loop.

Each connected client has one ``Session`` stream. The round loop's calls (``fit``,
``evaluate``, ``exchange``) become requests queued on the sampled clients' streams; the
answers come back on the caller's own queue, matched by task id. A client that is not connected,
disconnects, or misses the round's deadline becomes a ``ClientFailure``. An answer that
names an unknown or finished task, another run or another round is refused and recorded,
and the server goes on serving everyone else.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from fedstream.client.base import FitTask
from fedstream.errors import ClientFailure, ConfigError
from fedstream.params import Params
from fedstream.transport.base import Delivery
from fedstream.transport.grpc import fedstream_pb2 as pb
from fedstream.transport.grpc import fedstream_pb2_grpc as pb_grpc
from fedstream.transport.grpc.codec import fit_config_to_dict
from fedstream.transport.grpc.framing import CHUNK_BYTES, Assembler, ProtocolError, chunks
from fedstream.transport.grpc.handshake import HANDSHAKE_DEADLINE_S, HandshakeGuard, worker_count
from fedstream.transport.grpc.lane import BulkLane
from fedstream.types import ClientUpdate, EvaluateResult, FitConfig

if TYPE_CHECKING:
    from fedstream.transport.grpc.fleet import GrpcFleet

PROTOCOL = "fedstream/1"
log = logging.getLogger("fedstream.server")


@dataclass
class _Session:
    client_id: str
    peer: str = ""
    context: grpc.ServicerContext | None = None
    outbound: queue.Queue[pb.ServerMessage | None] = field(default_factory=queue.Queue)
    alive: bool = True
    last_seen: float = field(default_factory=time.monotonic)

    def live(self, heartbeat_s: float) -> bool:
        """Its stream is open and it was heard from within three heartbeats."""
        quiet = time.monotonic() - self.last_seen
        active = self.context is None or self.context.is_active()
        return self.alive and active and quiet <= 3 * heartbeat_s


@dataclass(frozen=True)
class _Pending:
    client_id: str
    kind: str
    round: int
    max_reply_bytes: int
    inbox: queue.Queue[Answer]


def max_reply_bytes(kind: str, sent_bytes: int, limit: int) -> int:
    """The most a reply to a ``kind`` request of ``sent_bytes`` may carry: a fit's update is
    at most a few times the model sent (SCAFFOLD adds a control variate), an evaluation
    sends only a header; a secure-sum stage is bounded by ``limit`` alone."""
    if kind == "fit":
        return min(limit, 4 * sent_bytes + CHUNK_BYTES)
    if kind == "evaluate":
        return min(limit, CHUNK_BYTES)
    return limit


@dataclass(frozen=True)
class Answer:
    """A client's answer to a request: its header and payload, or why it has none."""

    task_id: str
    client_id: str
    header: dict[str, Any]
    payload: bytes | bytearray
    error: str | None


TOKEN_HASH = "sha256"


def hash_token(token: str, salt: bytes | None = None) -> str:
    """``sha256$<salt>$<digest>`` of a token under a fresh 16-byte salt. Tokens are 32
    random bytes, so one salted SHA-256 is enough: there is nothing to guess."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.sha256(salt + token.encode()).hexdigest()
    return f"{TOKEN_HASH}${salt.hex()}${digest}"


def is_token_hash(value: str) -> bool:
    parts = value.split("$")
    return len(parts) == 3 and parts[0] == TOKEN_HASH


def token_matches(stored: str, token: str) -> bool:
    """Whether ``token`` hashes to ``stored`` (compared in constant time)."""
    _, salt, _ = stored.split("$")
    return hmac.compare_digest(stored, hash_token(token, bytes.fromhex(salt)))


class FedstreamService(pb_grpc.FedstreamServicer):
    """Authenticates clients and moves requests and answers between them and the transport.
    ``tokens`` maps client ids to their tokens or to salted hashes of them (``hash_token``);
    the service keeps only the hashes. With a ``lane`` (``grpc.lane``) each fit request
    carries a ticket for uploading its update beside the stream."""

    def __init__(
        self,
        tokens: Mapping[str, str],
        run_id: str,
        heartbeat_s: float = 5.0,
        max_payload_bytes: int = 2 << 30,
        lane: BulkLane | None = None,
    ) -> None:
        # only salted hashes are kept: a memory dump or a debug print leaks no token
        self.tokens = {c: t if is_token_hash(t) else hash_token(t) for c, t in tokens.items()}
        self.run_id = run_id
        self.heartbeat_s = heartbeat_s
        self.max_payload_bytes = max_payload_bytes
        self.lane = lane
        self.sessions: dict[str, _Session] = {}
        self.pending: dict[str, _Pending] = {}
        self.refusals: collections.deque[str] = collections.deque(maxlen=1000)  # the newest
        self.handshakes = HandshakeGuard()
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.finished = False

    # -- the gRPC method -------------------------------------------------------------------
    def Session(
        self, request_iterator: Iterator[pb.ClientMessage], context: grpc.ServicerContext
    ) -> Iterator[pb.ServerMessage]:
        crowded = self.handshakes.admit(context)
        if crowded is not None:
            if self.handshakes.report_due():
                log.warning("refused %d connections so far: %s", self.handshakes.refused, crowded)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, crowded)
        try:
            first = next(request_iterator)  # the guard cancels the stream if it is overdue
        except (StopIteration, grpc.RpcError):
            return
        finally:
            self.handshakes.release(context)
        client_id = self._authenticate(first, context)  # aborts the RPC if refused
        session = _Session(client_id, context.peer(), context)
        with self.changed:
            old = self.sessions.get(client_id)
            taken = old is not None and old.live(self.heartbeat_s)
            if old is not None and not taken:  # a reconnect replaces the stale stream
                old.alive = False
                old.outbound.put(None)
            if not taken:
                self.sessions[client_id] = session
                self.changed.notify_all()
        if taken:
            assert old is not None
            self._refuse(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"client {client_id!r} already has a live session from {old.peer}; refused a "
                f"second one from {session.peer} (a copy of its token in use elsewhere?). A "
                f"reconnect is let in once the old session misses its heartbeats "
                f"({3 * self.heartbeat_s:g} s)",
            )
        log.info("client %s connected from %s", client_id, session.peer)
        reader = threading.Thread(target=self._read, args=(session, request_iterator), daemon=True)
        reader.start()
        yield pb.ServerMessage(welcome=pb.Welcome(run_id=self.run_id, heartbeat_s=self.heartbeat_s))
        # until the None that _drop (or a newer session) queues: whatever was queued before
        # it, such as a refusal, still goes out
        reason = "disconnected"
        while context.is_active():
            try:
                message = session.outbound.get(timeout=min(1.0, self.heartbeat_s))
            except queue.Empty:
                silent = time.monotonic() - session.last_seen
                if silent > 3 * self.heartbeat_s:  # alive at the TCP level, but hung
                    reason = f"no heartbeat for {silent:.1f} s"
                    break
                continue
            if message is None:
                break
            yield message
        self._drop(session, reason)

    def _authenticate(self, first: pb.ClientMessage, context: grpc.ServicerContext) -> str:
        hello = first.hello if first.WhichOneof("body") == "hello" else None
        if hello is None:
            self._refuse(
                context, grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Hello"
            )
        assert hello is not None
        if hello.protocol != PROTOCOL:
            self._refuse(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol {hello.protocol!r} is not supported: expected {PROTOCOL!r}",
            )
        expected = self.tokens.get(hello.client_id)
        if expected is None or not token_matches(expected, hello.token):
            self._refuse(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                f"client {hello.client_id!r} is unknown or its token is wrong",
            )
        if self.finished:
            self._refuse(context, grpc.StatusCode.UNAVAILABLE, "the run has finished")
        return hello.client_id

    def _refuse(self, context: grpc.ServicerContext, code: grpc.StatusCode, reason: str) -> None:
        with self.lock:
            self.refusals.append(reason)
        log.warning("refused a client: %s", reason)
        context.abort(code, reason)

    def _read(self, session: _Session, messages: Iterator[pb.ClientMessage]) -> None:
        """Turn a client's stream of replies and chunks into answers, until it ends. A
        reply is checked before its first chunk: the chunks of a refused one are dropped
        as they come, never held."""
        reply: pb.Reply | None = None
        assembler: Assembler | None = None
        discarding = False
        try:
            for message in messages:
                session.last_seen = time.monotonic()
                kind = message.WhichOneof("body")
                if kind == "heartbeat":
                    continue
                if kind == "reply":
                    if reply is not None or discarding:
                        raise ProtocolError("a reply began before the last one's payload ended")
                    limit = self._claim(session, message.reply)
                    if limit is None:
                        discarding = True
                        continue
                    reply = message.reply
                    assembler = Assembler(limit, f"reply {reply.task_id}")
                    continue
                if kind == "chunk" and discarding:
                    discarding = not message.chunk.last
                    continue
                if kind == "chunk" and reply is not None and assembler is not None:
                    try:
                        payload = assembler.add(message.chunk)
                    except ProtocolError as exc:
                        self._answer(session, reply, b"", str(exc))
                        raise
                    if payload is not None:  # the client's own error, if it had one
                        self._answer(session, reply, payload, reply.error or None)
                        reply, assembler = None, None
                    continue
                raise ProtocolError(f"unexpected {kind!r} message")
        except ProtocolError as exc:
            with self.lock:
                self.refusals.append(f"client {session.client_id!r}: {exc}")
            log.warning("client %s broke the protocol: %s", session.client_id, exc)
        except grpc.RpcError:
            pass
        finally:
            self._drop(session, "disconnected")

    def _claim(self, session: _Session, reply: pb.Reply) -> int | None:
        """Check a reply's task, run and round before any of its payload: the most bytes
        its payload may have, or ``None`` if it is refused. A reply to this client's own
        task for the wrong run or round ends that task with the reason; a reply to a task
        that is unknown, finished or another client's is refused on the stream."""
        with self.lock:
            pending = self.pending.get(reply.task_id)
            if pending is None or pending.client_id != session.client_id:
                refusal = (
                    f"task {reply.task_id!r} is unknown or already finished"
                    if pending is None
                    else f"task {reply.task_id!r} was given to another client"
                )
                self.refusals.append(f"client {session.client_id!r}: {refusal}")
                session.outbound.put(pb.ServerMessage(refusal=pb.Refusal(reason=refusal)))
                log.warning("refused an answer from %s: %s", session.client_id, refusal)
                return None
            problem = None
            if reply.run_id != self.run_id:
                problem = f"answer is for run {reply.run_id!r}, expected {self.run_id!r}"
            elif reply.round != pending.round:
                problem = f"answer is for round {reply.round}, expected round {pending.round}"
            if problem is None:
                return pending.max_reply_bytes
            del self.pending[reply.task_id]
        self._revoke([reply.task_id])
        pending.inbox.put(Answer(reply.task_id, session.client_id, {}, b"", problem))
        return None

    def _answer(
        self, session: _Session, reply: pb.Reply, payload: bytes | bytearray, error: str | None
    ) -> None:
        """Pass on a claimed reply whose payload has arrived (or broke, ``error``)."""
        with self.lock:
            pending = self.pending.pop(reply.task_id, None)
        if pending is None:
            return  # the transport gave up on it (deadline) or the client dropped
        problem = None
        try:
            header = json.loads(reply.header_json) if reply.header_json else {}
        except ValueError:
            header, problem = {}, "reply header is not JSON"
        if isinstance(header, dict) and "lane_bytes" in header:
            payload, problem = self._by_lane(reply.task_id, session.client_id, header, payload)
        else:
            self._revoke([reply.task_id])
        pending.inbox.put(
            Answer(reply.task_id, session.client_id, header, payload, problem or error or None)
        )

    def _by_lane(
        self, task_id: str, client_id: str, header: dict[str, Any], payload: bytes | bytearray
    ) -> tuple[bytes | bytearray, str | None]:
        """The body a reply says came by the lane, or why it cannot be had."""
        body = self.lane.take(task_id, client_id) if self.lane is not None else None
        if payload:
            return b"", "reply says its body came by the lane, and sent one on the stream too"
        if body is None:
            return b"", "reply says its body came by the lane, and none arrived there"
        if header["lane_bytes"] != len(body):
            return b"", (
                f"lane_bytes={header['lane_bytes']!r} in the reply, but {len(body):,} bytes "
                "came by the lane"
            )
        return body, None

    def _revoke(self, task_ids: Sequence[str]) -> None:
        if self.lane is not None and task_ids:
            self.lane.revoke(list(task_ids))

    def _drop(self, session: _Session, reason: str) -> None:
        with self.changed:
            if session.alive:
                session.outbound.put(None)
            session.alive = False
            if self.sessions.get(session.client_id) is session:
                del self.sessions[session.client_id]
                log.info("client %s %s", session.client_id, reason)
            lost = [(t, p) for t, p in self.pending.items() if p.client_id == session.client_id]
            for task_id, _ in lost:
                del self.pending[task_id]
            self.changed.notify_all()
        self._revoke([task_id for task_id, _ in lost])
        for task_id, pending in lost:
            pending.inbox.put(Answer(task_id, session.client_id, {}, b"", reason))

    # -- used by the transport -----------------------------------------------------------
    def send(
        self,
        client_id: str,
        kind: str,
        round_number: int,
        header: Any,
        payload: bytes,
        inbox: queue.Queue[Answer],
    ) -> str | None:
        """Queue a request for ``client_id``; its task id, or ``None`` if not connected.
        Its answer (or failure) goes to ``inbox``, so callers waiting at once (the buffered
        loop's fleet and an evaluation) each get their own answers."""
        task_id = uuid.uuid4().hex
        limit = max_reply_bytes(kind, len(payload), self.max_payload_bytes)
        with self.lock:
            session = self.sessions.get(client_id)
            if session is None or not session.alive:
                return None
            self.pending[task_id] = _Pending(client_id, kind, round_number, limit, inbox)
        if self.lane is not None and kind == "fit" and isinstance(header, dict):
            ticket = self.lane.issue(task_id, client_id, limit)
            header = {**header, "lane": {"port": self.lane.port, "ticket": ticket}}
        request = pb.Request(
            task_id=task_id,
            run_id=self.run_id,
            round=round_number,
            kind=kind,
            header_json=json.dumps(header),
        )
        session.outbound.put(pb.ServerMessage(request=request))
        for chunk in chunks(payload):
            session.outbound.put(pb.ServerMessage(chunk=chunk))
        return task_id

    def forget(self, task_ids: Sequence[str]) -> None:
        with self.lock:
            for task_id in task_ids:
                self.pending.pop(task_id, None)
        self._revoke(task_ids)

    def connected(self) -> list[str]:
        with self.lock:
            return sorted(self.sessions)

    def connected_among(self, client_ids: Sequence[str]) -> list[str]:
        """Those of ``client_ids`` that are connected, in the order given."""
        with self.lock:
            return [c for c in client_ids if c in self.sessions]

    def wait_for(self, count: int, timeout_s: float) -> list[str]:
        """Block until ``count`` clients are connected; the connected ids, or an error."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while len(self.sessions) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConfigError(
                        "wait_for",
                        count,
                        f"at most the {len(self.sessions)} clients that connected within "
                        f"{timeout_s:g} s ({sorted(self.sessions)})",
                    )
                self.changed.wait(left)
            return sorted(self.sessions)

    def finish(self) -> None:
        """Tell every client the run is over and close their streams."""
        with self.lock:
            self.finished = True
            sessions = list(self.sessions.values())
        for session in sessions:
            session.outbound.put(pb.ServerMessage(refusal=pb.Refusal(reason="run finished")))
            session.outbound.put(None)


def fit_delivery(answer: Answer, bytes_down: int) -> Delivery[ClientUpdate]:
    """A fit request's answer as the loop takes it: the client's update, or why it has
    none (its own error, or a header that does not parse)."""
    client_id = answer.client_id
    if answer.error is not None:
        return Delivery(client_id, ClientFailure(client_id, "train", answer.error), bytes_down, 0)
    try:
        update = ClientUpdate(
            client_id,
            int(answer.header["round"]),
            Params.from_bytes(answer.payload),
            float(answer.header["weight"]),
            {k: float(v) for k, v in answer.header.get("metrics", {}).items()},
            {k: float(v) for k, v in answer.header.get("extras", {}).items()},
        )
    except (KeyError, TypeError, ValueError) as exc:
        failure = ClientFailure(client_id, "validate", f"malformed update: {exc}")
        return Delivery(client_id, failure, bytes_down, len(answer.payload))
    return Delivery(client_id, update, bytes_down, len(answer.payload))


class GrpcTransport:
    """The round loop's ``Transport`` over connected gRPC clients.

    ``round_timeout_s`` bounds each call: clients that have not answered by then are
    recorded as failures and the round goes on with the others.
    """

    def __init__(self, service: FedstreamService, round_timeout_s: float = 120.0) -> None:
        self.service = service
        self.round_timeout_s = round_timeout_s

    def fleet(self) -> GrpcFleet:
        """The connected clients as the asynchronous loop's fleet, each task bounded by
        ``round_timeout_s``."""
        from fedstream.transport.grpc.fleet import GrpcFleet

        return GrpcFleet(self.service, self.round_timeout_s)

    def _call(
        self, kind: str, round_number: int, requests: Mapping[str, tuple[Any, bytes]]
    ) -> Iterator[tuple[str, Answer | ClientFailure]]:
        stage = {"fit": "train", "evaluate": "evaluate"}.get(kind, kind)
        tasks: dict[str, str] = {}
        inbox: queue.Queue[Answer] = queue.Queue()
        for client_id, (header, payload) in requests.items():
            task_id = self.service.send(client_id, kind, round_number, header, payload, inbox)
            if task_id is None:
                yield client_id, ClientFailure(client_id, stage, "not connected")
            else:
                tasks[task_id] = client_id
        deadline = time.monotonic() + self.round_timeout_s
        while tasks:
            left = deadline - time.monotonic()
            try:
                answer = inbox.get(timeout=max(left, 0.001))
            except queue.Empty:
                break
            if tasks.pop(answer.task_id, None) is None:
                continue
            if answer.error is not None:
                yield answer.client_id, ClientFailure(answer.client_id, stage, answer.error)
            else:
                yield answer.client_id, answer
        self.service.forget(list(tasks))
        for client_id in tasks.values():
            reason = f"no answer within round_timeout={self.round_timeout_s:g} s"
            yield client_id, ClientFailure(client_id, stage, reason)

    def fit(self, params: Params, tasks: Sequence[FitTask]) -> Iterator[Delivery[ClientUpdate]]:
        if not tasks:
            return
        wire = params.to_bytes()
        round_number = tasks[0].round
        requests = {t.client_id: ({"config": fit_config_to_dict(t.config)}, wire) for t in tasks}
        for client_id, answer in self._call("fit", round_number, requests):
            if isinstance(answer, ClientFailure):
                yield Delivery(client_id, answer, len(wire), 0)
                continue
            yield fit_delivery(answer, len(wire))

    def evaluate(
        self,
        params: Params,
        round_number: int,
        client_ids: Sequence[str],
        broadcast: str = "none",
        personalize: FitConfig | None = None,
    ) -> Iterator[Delivery[EvaluateResult]]:
        wire = params.to_bytes()
        personal = fit_config_to_dict(personalize) if personalize is not None else None
        requests: dict[str, tuple[Any, bytes]] = {
            c: ({"broadcast": broadcast, "personalize": personal}, wire) for c in client_ids
        }
        for client_id, answer in self._call("evaluate", round_number, requests):
            if isinstance(answer, ClientFailure):
                yield Delivery(client_id, answer, len(wire), 0)
                continue
            try:
                result = EvaluateResult(
                    client_id,
                    round_number,
                    int(answer.header["num_examples"]),
                    {k: float(v) for k, v in answer.header.get("metrics", {}).items()},
                )
            except (KeyError, TypeError, ValueError) as exc:
                failure = ClientFailure(client_id, "evaluate", f"malformed result: {exc}")
                yield Delivery(client_id, failure, len(wire), 0)
                continue
            yield Delivery(client_id, result, len(wire), 0)

    def exchange(
        self, stage: str, round_number: int, requests: Mapping[str, bytes]
    ) -> Iterator[tuple[str, bytes | ClientFailure]]:
        calls = {c: ({"stage": stage}, r) for c, r in requests.items()}
        for client_id, answer in self._call(stage, round_number, calls):
            yield client_id, answer if isinstance(answer, ClientFailure) else bytes(answer.payload)


@dataclass
class ServerCredentials:
    """TLS for the server: its certificate chain and key (PEM), and optionally the CA that
    client certificates must chain to (mutual TLS)."""

    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None


def start_server(
    service: FedstreamService,
    address: str,
    credentials: ServerCredentials | None,
    max_message_bytes: int = 4 * CHUNK_BYTES,
) -> tuple[grpc.Server, int]:
    """Serve ``service`` on ``address`` ("host:port", port 0 picks a free one), with TLS
    unless ``credentials`` is ``None``. Returns the server and the port it listens on.
    A single message above ``max_message_bytes`` is refused by gRPC itself.

    The worker pool has one thread per client plus the allowance of streams still awaiting
    their Hello (``handshake.worker_count``); gRPC refuses a stream beyond it at once
    (``RESOURCE_EXHAUSTED``) instead of queueing it behind the others. A connection that
    does not finish its TLS and HTTP/2 handshake within the handshake deadline is closed,
    and one with no stream for a minute too."""
    workers = worker_count(len(service.tokens), service.handshakes.total)
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.server_handshake_timeout_ms", int(HANDSHAKE_DEADLINE_S * 1000)),
        ("grpc.max_connection_idle_ms", 60_000),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=options,
        maximum_concurrent_rpcs=workers,
    )
    pb_grpc.add_FedstreamServicer_to_server(service, server)  # type: ignore[no-untyped-call]
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        tls = grpc.ssl_server_credentials(
            [(credentials.private_key, credentials.certificate_chain)],
            root_certificates=credentials.client_ca,
            require_client_auth=credentials.client_ca is not None,
        )
        port = server.add_secure_port(address, tls)
    if port == 0:
        raise ConfigError("address", address, "a host:port this process may listen on")
    server.start()
    return server, port
