"""Bounds on the streams that have not yet said who they are.

Each open ``Session`` stream holds one of the server's worker threads. A stream that never
sends its ``Hello`` would hold one for ever, and a few hundred of them would lock every
real client out. :class:`HandshakeGuard` admits a stream that has not yet authenticated
only while fewer than ``per_source`` such streams come from its address and fewer than
``total`` from everywhere, and cancels it if its ``Hello`` has not arrived within
``deadline_s``. The server's pool is sized for every client plus ``total``
(:func:`worker_count`), so the unauthenticated can never take the clients' share.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

HANDSHAKE_DEADLINE_S = 10.0  # from a stream's start to its Hello
MAX_UNAUTHENTICATED = 64  # streams awaiting their Hello, from everywhere
MAX_UNAUTHENTICATED_PER_SOURCE = 16  # and from one address
SPARE_WORKERS = 16  # beyond one per client and the unauthenticated


def worker_count(clients: int, unauthenticated: int = MAX_UNAUTHENTICATED) -> int:
    """Worker threads (and concurrent streams) for a server of ``clients`` clients: one
    each, the unauthenticated allowance, and a few spare for reconnects that overlap."""
    return clients + unauthenticated + SPARE_WORKERS


def source_of(peer: str) -> str:
    """The address part of a gRPC peer string: ``ipv4:10.0.0.7:5123`` → ``ipv4:10.0.0.7``,
    ``ipv6:[::1]:5123`` → ``ipv6:[::1]``, ``unix:/tmp/s`` → itself."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return f"{kind}:{rest.rpartition(':')[0]}"
    return peer


@dataclass
class HandshakeGuard:
    """Admits, times and releases the streams that have not yet authenticated."""

    deadline_s: float = HANDSHAKE_DEADLINE_S
    total: int = MAX_UNAUTHENTICATED
    per_source: int = MAX_UNAUTHENTICATED_PER_SOURCE
    refused: int = 0
    expired: int = 0
    _waiting: dict[grpc.ServicerContext, tuple[str, float]] = field(default_factory=dict)
    _sources: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _watchdog: threading.Thread | None = None
    _reported: float = float("-inf")

    def report_due(self, every_s: float = 10.0) -> bool:
        """Whether to log the refusals now: at most once per ``every_s``, so that a flood
        of connections cannot flood the log too."""
        now = time.monotonic()
        with self._lock:
            due = now - self._reported >= every_s
            if due:
                self._reported = now
        return due

    def admit(self, context: grpc.ServicerContext) -> str | None:
        """Start timing ``context``'s handshake; why it is refused instead, if it is."""
        source = source_of(context.peer())
        with self._lock:
            reason = None
            if self._sources[source] >= self.per_source:
                reason = (
                    f"{self.per_source} connections from {source} are already awaiting their Hello"
                )
            elif len(self._waiting) >= self.total:
                reason = f"{self.total} connections are already awaiting their Hello"
            if reason is not None:
                self.refused += 1
                return reason
            self._waiting[context] = (source, time.monotonic() + self.deadline_s)
            self._sources[source] += 1
            if self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, daemon=True)
                self._watchdog.start()
        return None

    def release(self, context: grpc.ServicerContext) -> None:
        """``context`` said Hello (or ended): it no longer counts against the bounds."""
        with self._lock:
            entry = self._waiting.pop(context, None)
            if entry is not None:
                self._sources[entry[0]] -= 1
                if self._sources[entry[0]] <= 0:
                    del self._sources[entry[0]]

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _watch(self) -> None:
        """Cancel every stream whose Hello is overdue; its worker is then free."""
        while True:
            time.sleep(min(0.25, self.deadline_s / 4))
            now = time.monotonic()
            with self._lock:
                overdue = [c for c, (_, due) in self._waiting.items() if due <= now]
            for context in overdue:
                self.release(context)
                self.expired += 1
                context.cancel()
