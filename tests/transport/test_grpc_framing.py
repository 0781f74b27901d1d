"""Chunked payloads (transport/grpc/framing.py): round trips, and each way a payload can be
wrong is refused with what is wrong."""

import hashlib

import pytest

from fedstream.transport.grpc import fedstream_pb2 as pb
from fedstream.transport.grpc.framing import CHUNK_BYTES, Assembler, ProtocolError, chunks


def assemble(pieces, limit=1 << 30):
    assembler = Assembler(limit, "reply t")
    out = None
    for piece in pieces:
        out = assembler.add(piece)
    return out


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES - 7])
def test_payloads_of_every_size_round_trip_in_chunks_of_at_most_one_mib(size):
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    pieces = list(chunks(payload))
    assert len(pieces) == max(1, -(-size // CHUNK_BYTES))
    assert all(len(p.data) <= CHUNK_BYTES for p in pieces) and pieces[-1].last
    assert assemble(pieces) == payload


def test_a_chunk_of_the_right_length_with_a_wrong_sha256_is_refused():
    payload = b"the update" * 1000
    pieces = list(chunks(payload))
    altered = bytearray(pieces[-1].data)
    altered[5] ^= 1  # one bit, same length: only the hash can tell
    forged = pb.Chunk(data=bytes(altered), last=True, sha256=pieces[-1].sha256,
                      total_bytes=pieces[-1].total_bytes)  # fmt: skip
    with pytest.raises(ProtocolError, match="reply t: payload does not match its SHA-256"):
        assemble([*pieces[:-1], forged])
    # and a hash recomputed by the forger for other bytes than were announced fails too
    rehashed = pb.Chunk(data=bytes(altered), last=True, total_bytes=len(altered),
                        sha256=hashlib.sha256(payload).hexdigest())  # fmt: skip
    with pytest.raises(ProtocolError, match="does not match its SHA-256"):
        assemble([rehashed])


def test_truncated_and_oversized_payloads_are_refused_as_they_arrive():
    payload = bytes(2 * CHUNK_BYTES)
    first, second = chunks(payload)
    with pytest.raises(ProtocolError, match="its last chunk says 2,097,152 \\(truncated\\)"):
        assemble([second])  # the first chunk lost
    assembler = Assembler(CHUNK_BYTES + 10, "reply t")
    assert assembler.add(first) is None
    with pytest.raises(ProtocolError, match="exceeds the limit of 1,048,586 bytes"):
        assembler.add(second)  # refused before the whole payload is held
