"""An attacker that holds many idle streams open on a fedstream server (issue 18, item 3).

Each of ``count`` TCP connections, from a source address of its own choosing on the
loopback network (127.0.0.2 by default, so that per-source bounds are what they would be
on a real network), speaks just enough HTTP/2 to open a ``Session`` stream and then never
sends its Hello. It answers the server's SETTINGS and PINGs, so the connections stay up,
and opens a new stream whenever the server ends one: the pressure never lets up. Plain
sockets, written here from RFC 9113 and RFC 7541, so that nothing in the way is polite.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from dataclasses import dataclass, field

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream)
        + payload
    )


def literal(name_index: int, value: str) -> bytes:
    """An HPACK literal without indexing whose name is static-table entry ``name_index``
    (< 15) and whose value is short (< 127 bytes), no Huffman coding."""
    raw = value.encode()
    return bytes([name_index, len(raw)]) + raw


def session_headers(authority: str) -> bytes:
    """The request headers of ``/fedstream.v1.Fedstream/Session`` in HPACK."""
    content_type = b"\x0f\x10" + bytes([16]) + b"application/grpc"  # static entry 31
    te = b"\x00" + bytes([2]) + b"te" + bytes([8]) + b"trailers"
    return (
        b"\x83\x86"  # :method POST, :scheme http (static entries 3 and 6)
        + literal(4, "/fedstream.v1.Fedstream/Session")
        + literal(1, authority)
        + content_type
        + te
    )


@dataclass
class _Connection:
    sock: socket.socket
    stream: int = 1
    buffer: bytearray = field(default_factory=bytearray)
    streams_opened: int = 0


class IdleStreams:
    """``count`` connections to 127.0.0.1:``port``, each holding one idle stream."""

    def __init__(self, port: int, count: int, source: str = "127.0.0.2") -> None:
        self.port, self.count, self.source = port, count, source
        self.selector = selectors.DefaultSelector()
        self.connections: list[_Connection] = []
        self.resets = 0
        self.closed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> IdleStreams:
        headers = session_headers(f"127.0.0.1:{self.port}")
        for _ in range(self.count):
            sock = socket.socket()
            sock.bind((self.source, 0))
            sock.connect(("127.0.0.1", self.port))
            connection = _Connection(sock)
            sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
            self._open(connection, headers)
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, connection)
            self.connections.append(connection)
        self._headers = headers
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for connection in self.connections:
            connection.sock.close()

    def open_connections(self) -> int:
        return len(self.connections) - self.closed

    def _open(self, connection: _Connection, headers: bytes) -> None:
        connection.sock.sendall(frame(HEADERS, END_HEADERS, connection.stream, headers))
        connection.streams_opened += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                connection: _Connection = key.data
                try:
                    data = connection.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.selector.unregister(connection.sock)
                    self.closed += 1
                    continue
                connection.buffer += data
                self._handle(connection)

    def _handle(self, connection: _Connection) -> None:
        buffer = connection.buffer
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                return
            kind, flags = buffer[3], buffer[4]
            stream = int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF
            payload = bytes(buffer[9 : 9 + length])
            del buffer[: 9 + length]
            reply = b""
            if kind == SETTINGS and not flags & ACK:
                reply = frame(SETTINGS, ACK, 0)
            elif kind == PING and not flags & ACK:
                reply = frame(PING, ACK, 0, payload)
            elif stream == connection.stream and (
                kind == RST_STREAM or (kind in (HEADERS, DATA) and flags & END_STREAM)
            ):
                self.resets += 1  # the server ended our stream: open the next one
                connection.stream += 2
                reply = frame(HEADERS, END_HEADERS, connection.stream, self._headers)
                connection.streams_opened += 1
            if reply:
                try:
                    connection.sock.sendall(reply)
                except OSError:
                    return
