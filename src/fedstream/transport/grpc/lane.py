"""A bulk lane beside the gRPC stream: a client's large update over a plain TCP socket.

gRPC Python moves a payload at about a fifth of what a raw socket does on the same host: it
copies each chunk into a protobuf message and through its core. A deployment can open a
lane (``serve(bulk_port=…)``): each fit request then carries a **ticket**, 32 bytes the
server draws from the OS CSPRNG for that one task and sends only over that client's
authenticated (and, with TLS, encrypted) stream. A client whose update is at least
``LANE_MIN_BYTES`` connects to the lane's port on the server's host and sends::

    b"FSL1" | ticket (32 bytes) | size (u64, little-endian) | CRC-32 (u32, LE)

The server answers ``b"\\x01"`` (send it) or ``b"\\x00"`` and a reason, so a refused
upload is never sent; then the body, answered the same way (taken, or why not). Only then
does the client send its gRPC reply, with ``{"lane_bytes": size}`` in its header and no payload;
the server pairs the two by task. A lane that fails for any reason costs nothing but time:
the client sends the update over the stream as before.

What the lane guarantees, each tested by playing the attacker (``tests/transport``):

- a connection must present a live ticket within ``header_deadline_s`` of connecting (TLS
  handshake included), or it is closed; a ticket is good for one upload, for its own task;
- a body may not exceed the task's reply limit (``server.max_reply_bytes``), checked from
  the size field before any of the body is read, and must arrive within ``idle_timeout_s``
  between reads and before its task ends (a deadline, a dropped client); a body that
  disagrees with its CRC-32 or comes short is dropped;
- at most ``max_connections`` connections are open at once; more are closed at once.

The CRC-32 catches corruption and truncation, which is what the stream's SHA-256 is for; it
runs at several GB/s where SHA-256 would halve the lane's speed. Tampering is TLS's to
stop: with TLS on the stream, the lane runs TLS too, with the same certificates.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import ssl
import struct
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from fedstream.errors import FedstreamError
from fedstream.transport.grpc.handshake import HANDSHAKE_DEADLINE_S

MAGIC = b"FSL1"
TICKET_BYTES = 32
_HEADER = struct.Struct(f"<4s{TICKET_BYTES}sQI")
LANE_MIN_BYTES = 1 << 20  # smaller updates go over the stream: a connection costs more
READ_BYTES = 4 << 20  # at most this much per recv or send call
MAX_REASON_BYTES = 1024
IDLE_TIMEOUT_S = 30.0

log = logging.getLogger("fedstream.server")


class LaneError(FedstreamError, ConnectionError):
    """An upload over the lane did not get through (the client then uses the stream)."""


@dataclass(frozen=True)
class _Ticket:
    task_id: str
    client_id: str
    limit: int


def _key(ticket: bytes) -> bytes:
    """Tickets are looked up by their hash, so a lookup's timing says nothing about them."""
    return hashlib.sha256(ticket).digest()


class BulkLane:
    """The server's end: a listening socket on ``host`` (``port`` 0 picks a free one)
    that takes ticketed uploads and keeps each body until the stream's reply claims it."""

    def __init__(
        self,
        host: str,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
        max_connections: int = 64,
        header_deadline_s: float = HANDSHAKE_DEADLINE_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family)
        self.port: int = self._listener.getsockname()[1]
        self._tls = tls
        self._header_deadline_s = header_deadline_s
        self._idle_timeout_s = idle_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._tickets: dict[bytes, _Ticket] = {}
        self._issued: dict[str, bytes] = {}  # task id -> its ticket's key
        self._uploading: set[str] = set()  # tasks whose ticket was shown, body not yet in
        self._bodies: dict[str, tuple[str, bytearray]] = {}  # task id -> (client, body)
        self.crowded = 0  # connections closed because every slot was taken
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="bulk-lane").start()

    # -- used by the service ---------------------------------------------------------
    def issue(self, task_id: str, client_id: str, limit: int) -> str:
        """A fresh ticket (hex) for ``task_id``'s upload of at most ``limit`` bytes."""
        ticket = os.urandom(TICKET_BYTES)
        key = _key(ticket)
        with self._lock:
            self._tickets[key] = _Ticket(task_id, client_id, limit)
            self._issued[task_id] = key
        return ticket.hex()

    def take(self, task_id: str, client_id: str) -> bytearray | None:
        """The body uploaded for ``task_id`` by ``client_id`` (once), or ``None``."""
        with self._lock:
            self._forget(task_id)
            held = self._bodies.pop(task_id, None)
        if held is None or held[0] != client_id:
            return None
        return held[1]

    def revoke(self, task_ids: list[str]) -> None:
        """Forget these tasks' tickets and bodies (the task ended without them)."""
        with self._lock:
            for task_id in task_ids:
                self._forget(task_id)
                self._bodies.pop(task_id, None)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            self._tickets.clear()
            self._issued.clear()
            self._uploading.clear()
            self._bodies.clear()

    def _forget(self, task_id: str) -> None:
        """Its ticket dies and an upload under way for it will not be kept."""
        key = self._issued.pop(task_id, None)
        if key is not None:
            self._tickets.pop(key, None)
        self._uploading.discard(task_id)

    # -- the lane itself -------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            if not self._slots.acquire(blocking=False):
                self.crowded += 1
                connection.close()
                continue
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            with raw:
                deadline = time.monotonic() + self._header_deadline_s
                connection = self._secured(raw, deadline)
                try:
                    reason = self._receive(connection, deadline)
                except (OSError, ValueError) as exc:
                    reason = f"upload failed: {exc}"
                if reason is not None:
                    self._refuse(connection, reason)
                else:
                    connection.sendall(b"\x01")
        except (OSError, ValueError):
            pass  # a broken TLS handshake or a peer that went away: nothing to answer
        finally:
            self._slots.release()

    def _secured(self, raw: socket.socket, deadline: float) -> socket.socket:
        if self._tls is None:
            return raw
        raw.settimeout(max(deadline - time.monotonic(), 0.001))
        connection = self._tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        connection.do_handshake()
        return connection

    def _receive(self, connection: socket.socket, deadline: float) -> str | None:
        """Read one upload; why it is refused, or ``None`` once its body is kept."""
        header = _read_exactly(connection, _HEADER.size, deadline)
        if header is None:
            return f"no complete header within {self._header_deadline_s:g} s"
        magic, ticket, size, crc = _HEADER.unpack(header)
        if magic != MAGIC:
            return "not a fedstream lane upload"
        with self._lock:
            claim = self._tickets.pop(_key(ticket), None)
            if claim is not None:
                self._issued.pop(claim.task_id, None)
                self._uploading.add(claim.task_id)
        if claim is None:
            return "unknown or used ticket"
        if size > claim.limit:
            return f"body of {size:,} bytes exceeds this task's limit of {claim.limit:,}"
        connection.sendall(b"\x01")
        body = bytearray(size)
        view = memoryview(body)
        got, running = 0, 0
        connection.settimeout(self._idle_timeout_s)
        while got < size:
            count = connection.recv_into(view[got:], min(READ_BYTES, size - got))
            if count == 0:
                return f"body ended at {got:,} of {size:,} bytes"
            if claim.task_id not in self._uploading:  # a slow upload outlived its task
                return "the task ended before its body arrived"
            running = zlib.crc32(view[got : got + count], running)
            got += count
        if running != crc:
            return "body does not match its CRC-32"
        with self._lock:
            if claim.task_id not in self._uploading:
                return "the task ended before its body arrived"
            self._uploading.discard(claim.task_id)
            self._bodies[claim.task_id] = (claim.client_id, body)
        return None

    def _refuse(self, connection: socket.socket, reason: str) -> None:
        log.warning("bulk lane refused an upload: %s", reason)
        with contextlib.suppress(OSError):
            connection.sendall(b"\x00" + reason.encode()[:MAX_REASON_BYTES])


def _read_exactly(connection: socket.socket, count: int, deadline: float) -> bytes | None:
    """``count`` bytes, or ``None`` if the peer stops or ``deadline`` passes first."""
    data = bytearray()
    while len(data) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        connection.settimeout(left)
        try:
            block = connection.recv(count - len(data))
        except TimeoutError:
            return None
        if not block:
            return None
        data += block
    return bytes(data)


def host_of(address: str) -> str:
    """The host of a gRPC ``host:port`` address (``[::1]:50051`` → ``::1``), where the lane
    listens beside the stream."""
    return address.rpartition(":")[0].strip("[]") or address


def send_by_lane(
    host: str,
    port: int,
    ticket_hex: str,
    body: bytes | memoryview,
    tls: ssl.SSLContext | None = None,
    timeout_s: float = IDLE_TIMEOUT_S,
) -> None:
    """Upload ``body`` for the task whose ticket is ``ticket_hex``; raises ``LaneError``
    saying why if the server did not take it."""
    try:
        ticket = bytes.fromhex(ticket_hex)
    except ValueError:
        raise LaneError(f"ticket {ticket_hex[:16]!r}… is not hex") from None
    if len(ticket) != TICKET_BYTES:
        raise LaneError(f"ticket is {len(ticket)} bytes, expected {TICKET_BYTES}")
    view = memoryview(body).cast("B")
    crc = zlib.crc32(view)
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            connection = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
            connection.sendall(_HEADER.pack(MAGIC, ticket, len(view), crc))
            refusal = _verdict(connection)
            if refusal is None:
                # a block at a time: the timeout bounds each, as the server's does each read
                # (one sendall's timeout would bound the whole body, however large)
                for start in range(0, len(view), READ_BYTES):
                    connection.sendall(view[start : start + READ_BYTES])
                refusal = _verdict(connection)
    except OSError as exc:
        raise LaneError(f"lane {host}:{port}: {exc}") from exc
    if refusal is not None:
        raise LaneError(f"lane {host}:{port} refused the upload: {refusal}")


def _verdict(connection: socket.socket) -> str | None:
    """The server's answer: ``None`` to go on, else its reason (up to the connection's
    end, at most ``MAX_REASON_BYTES``)."""
    first = connection.recv(1)
    if first == b"\x01":
        return None
    reason = bytearray()
    while first and len(reason) < MAX_REASON_BYTES:
        block = connection.recv(MAX_REASON_BYTES - len(reason))
        if not block:
            break
        reason += block
    return reason.decode(errors="replace") or "closed without an answer"


def server_tls(
    certificate_chain: bytes, private_key: bytes, client_ca: bytes | None
) -> ssl.SSLContext:
    """The lane's TLS as a server, from the PEM the gRPC server uses (mutual with a CA)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, certificate_chain, private_key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=client_ca.decode())
    return context


def client_tls(
    root_ca: bytes | None, certificate_chain: bytes | None, private_key: bytes | None
) -> ssl.SSLContext:
    """The lane's TLS as a client: the server checked against ``root_ca`` (the system's
    roots without one) and its name, and for mutual TLS the client's own chain and key."""
    context = ssl.create_default_context(cadata=root_ca.decode() if root_ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certificate_chain is not None and private_key is not None:
        _load_chain(context, certificate_chain, private_key)
    return context


def _load_chain(context: ssl.SSLContext, chain: bytes, key: bytes) -> None:
    """``load_cert_chain`` reads only files: the PEM goes through a private temporary
    folder that is removed at once."""
    with tempfile.TemporaryDirectory(prefix="fedstream-tls-") as folder:
        chain_path, key_path = Path(folder) / "chain.pem", Path(folder) / "key.pem"
        chain_path.write_bytes(chain)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        context.load_cert_chain(chain_path, key_path)
