"""Binary payloads as a run of ``Chunk`` messages, and their checked reassembly.

A payload of any size is cut into chunks of at most ``CHUNK_BYTES``; the last chunk says
the total size and the SHA-256 of the whole. The receiver refuses a payload beyond its size
limit as soon as the running total passes it (before holding it all), and a payload whose
size or hash disagrees with the last chunk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from fedstream.errors import FedstreamError
from fedstream.transport.grpc import fedstream_pb2 as pb

CHUNK_BYTES = 1 << 20


class ProtocolError(FedstreamError, ValueError):
    """A peer broke the protocol: bad token, wrong order, bad ids, bad or oversized payload."""


def chunks(payload: bytes | memoryview) -> Iterator[pb.Chunk]:
    """``payload`` as chunks; an empty payload is one empty last chunk."""
    view = memoryview(payload).cast("B")
    total = len(view)
    digest = hashlib.sha256()
    if total == 0:
        yield pb.Chunk(data=b"", last=True, sha256=digest.hexdigest(), total_bytes=0)
        return
    for start in range(0, total, CHUNK_BYTES):
        end = min(start + CHUNK_BYTES, total)
        last = end == total
        data = bytes(view[start:end])
        digest.update(data)  # while the chunk is in cache: no second pass over the payload
        yield pb.Chunk(
            data=data,
            last=last,
            sha256=digest.hexdigest() if last else "",
            total_bytes=total if last else 0,
        )


class Assembler:
    """Collects one payload's chunks; ``add`` returns the payload after the last chunk."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self._parts: list[bytes] = []
        self._size = 0
        self._hash = hashlib.sha256()

    def add(self, chunk: pb.Chunk) -> bytes | None:
        self._size += len(chunk.data)
        if self._size > self.limit:
            raise ProtocolError(f"{self.what}: payload exceeds the limit of {self.limit:,} bytes")
        self._parts.append(chunk.data)
        self._hash.update(chunk.data)
        if not chunk.last:
            return None
        if chunk.total_bytes != self._size:
            raise ProtocolError(
                f"{self.what}: payload is {self._size:,} bytes, its last chunk says "
                f"{chunk.total_bytes:,} (truncated)"
            )
        if chunk.sha256 != self._hash.hexdigest():
            raise ProtocolError(f"{self.what}: payload does not match its SHA-256")
        return b"".join(self._parts)
