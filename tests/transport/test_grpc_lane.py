"""The bulk lane beside the gRPC stream (``transport.grpc.lane``): a ticketed upload gets
through whole and once; every other move an attacker can make on its port is refused
before it costs the server more than a header's worth of memory."""

import json
import queue
import socket
import struct
import threading
import time
import zlib

import numpy as np
import pytest

from fedstream.deploy import open_lane
from fedstream.errors import ConfigError
from fedstream.transport.grpc import fedstream_pb2 as pb
from fedstream.transport.grpc.client import _LaneRoute
from fedstream.transport.grpc.framing import chunks
from fedstream.transport.grpc.lane import (
    MAGIC,
    BulkLane,
    LaneError,
    client_tls,
    host_of,
    send_by_lane,
    server_tls,
)
from fedstream.transport.grpc.server import FedstreamService, start_server
from tests.conftest import make_certificates
from tests.deploy.harness import RawSession, hello

BODY = np.random.default_rng(0).bytes(3 << 20)  # 3 MiB


@pytest.fixture
def lane():
    opened = BulkLane("127.0.0.1", header_deadline_s=1.0, idle_timeout_s=1.0)
    yield opened
    opened.close()


def read_all(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes."""
    answer = b""
    while block := connection.recv(2048):
        answer += block
    return answer


def raw_upload(port: int, ticket: bytes, size: int, crc: int, body: bytes) -> bytes:
    """Speak the lane's protocol by hand: the header as given, ``body`` if the server says
    go on, then all the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(struct.pack("<4s32sQI", MAGIC, ticket, size, crc))
        first = connection.recv(1)
        if first == b"\x01":
            connection.sendall(body)
            connection.shutdown(socket.SHUT_WR)
        return first + read_all(connection)


def test_a_ticketed_upload_arrives_whole_once_and_only_for_its_client(lane):
    ticket = lane.issue("task-1", "alice", limit=4 << 20)
    send_by_lane("127.0.0.1", lane.port, ticket, BODY)
    assert lane.take("task-1", "bob") is None  # another client cannot claim it
    ticket = lane.issue("task-2", "alice", limit=4 << 20)
    send_by_lane("127.0.0.1", lane.port, ticket, BODY)
    assert lane.take("task-2", "alice") == BODY
    assert lane.take("task-2", "alice") is None  # taken once
    with pytest.raises(LaneError, match="refused the upload: unknown or used ticket"):
        send_by_lane("127.0.0.1", lane.port, ticket, BODY)  # a replay


def test_a_guessed_revoked_or_malformed_ticket_is_refused(lane):
    with pytest.raises(LaneError, match="unknown or used ticket"):
        send_by_lane("127.0.0.1", lane.port, "ab" * 32, BODY)
    ticket = lane.issue("task-1", "alice", limit=4 << 20)
    lane.revoke(["task-1"])  # the task ended (deadline, disconnect) before the upload
    with pytest.raises(LaneError, match="unknown or used ticket"):
        send_by_lane("127.0.0.1", lane.port, ticket, BODY)
    with pytest.raises(LaneError, match="is 3 bytes, expected 32"):
        send_by_lane("127.0.0.1", lane.port, "abcdef", BODY)
    assert raw_upload(lane.port, b"x" * 32, 0, 0, b"")[:1] == b"\x00"
    with socket.create_connection(("127.0.0.1", lane.port), timeout=5) as connection:
        connection.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".ljust(48, b"x"))
        assert read_all(connection) == b"\x00not a fedstream lane upload"


def test_a_size_above_the_tasks_limit_is_refused_from_its_header_alone(lane):
    ticket = bytes.fromhex(lane.issue("task-1", "alice", limit=1 << 20))
    # claims an exabyte: refused before any of it is allocated or read
    answer = raw_upload(lane.port, ticket, 1 << 60, 0, b"")
    assert answer == (
        b"\x00body of 1,152,921,504,606,846,976 bytes exceeds this task's limit of 1,048,576"
    )


def test_a_short_or_corrupted_body_is_dropped(lane):
    ticket = bytes.fromhex(lane.issue("task-1", "alice", limit=4 << 20))
    answer = raw_upload(lane.port, ticket, 1000, zlib.crc32(b"y" * 1000), b"y" * 500)
    assert answer == b"\x01\x00body ended at 500 of 1,000 bytes"
    assert lane.take("task-1", "alice") is None
    ticket = bytes.fromhex(lane.issue("task-2", "alice", limit=4 << 20))
    answer = raw_upload(lane.port, ticket, 1000, zlib.crc32(b"y" * 1000) ^ 1, b"y" * 1000)
    assert answer == b"\x01\x00body does not match its CRC-32"
    assert lane.take("task-2", "alice") is None


def test_a_connection_that_sends_no_header_is_closed_at_the_deadline(lane):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", lane.port), timeout=5) as connection:
        connection.sendall(MAGIC)  # then nothing: a slow-loris
        answer = read_all(connection)
    assert answer == b"\x00no complete header within 1 s"
    assert time.monotonic() - started < 3


def test_a_stalled_body_is_dropped_after_the_idle_timeout(lane):
    ticket = bytes.fromhex(lane.issue("task-1", "alice", limit=4 << 20))
    with socket.create_connection(("127.0.0.1", lane.port), timeout=5) as connection:
        connection.sendall(struct.pack("<4s32sQI", MAGIC, ticket, 1000, 0) + b"z" * 10)
        answer = read_all(connection)  # then nothing
    assert answer == b"\x01\x00upload failed: timed out"
    assert lane.take("task-1", "alice") is None


def test_a_body_still_arriving_when_its_task_ends_is_not_kept(lane):
    ticket = bytes.fromhex(lane.issue("task-1", "alice", limit=4 << 20))
    with socket.create_connection(("127.0.0.1", lane.port), timeout=5) as connection:
        connection.sendall(struct.pack("<4s32sQI", MAGIC, ticket, 2000, zlib.crc32(b"z" * 2000)))
        assert connection.recv(1) == b"\x01"
        connection.sendall(b"z" * 1000)
        time.sleep(0.2)
        lane.revoke(["task-1"])  # the round's deadline passed
        connection.sendall(b"z" * 1000)
        assert read_all(connection) == b"\x00the task ended before its body arrived"
    assert lane.take("task-1", "alice") is None


def test_connections_beyond_the_limit_are_closed_at_once():
    lane = BulkLane("127.0.0.1", max_connections=2, header_deadline_s=5.0)
    try:
        idle = [socket.create_connection(("127.0.0.1", lane.port)) for _ in range(2)]
        time.sleep(0.2)  # both hold a slot
        with socket.create_connection(("127.0.0.1", lane.port), timeout=5) as third:
            started = time.monotonic()
            assert third.recv(16) == b""  # closed without a word
            assert time.monotonic() - started < 2
        assert lane.crowded == 1
        for connection in idle:
            connection.close()
    finally:
        lane.close()


def test_over_tls_only_a_client_that_trusts_the_servers_ca_gets_through(tmp_path):
    ca, cert, key, client_cert, client_key = make_certificates(tmp_path)
    lane = BulkLane("127.0.0.1", tls=server_tls(cert, key, client_ca=ca))
    try:
        ticket = lane.issue("task-1", "alice", limit=4 << 20)
        with pytest.raises(LaneError, match="CERTIFICATE_VERIFY_FAILED"):
            send_by_lane("127.0.0.1", lane.port, ticket, BODY, client_tls(None, None, None))
        with pytest.raises(LaneError):  # mutual TLS: no client certificate, no upload
            send_by_lane("127.0.0.1", lane.port, ticket, BODY, client_tls(ca, None, None))
        with pytest.raises(LaneError):  # plaintext against TLS
            send_by_lane("127.0.0.1", lane.port, ticket, BODY)
        # none of those used the ticket up: the right client still can
        send_by_lane("127.0.0.1", lane.port, ticket, BODY, client_tls(ca, client_cert, client_key))
        assert lane.take("task-1", "alice") == BODY
    finally:
        lane.close()


def test_uploads_from_many_threads_each_reach_their_own_task(lane):
    bodies = {f"task-{k}": np.random.default_rng(k).bytes((1 << 20) + k) for k in range(6)}
    tickets = {t: lane.issue(t, "alice", limit=2 << 20) for t in bodies}
    threads = [
        threading.Thread(target=send_by_lane, args=("127.0.0.1", lane.port, tickets[t], b))
        for t, b in bodies.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(lane.take(t, "alice") == b for t, b in bodies.items())


@pytest.fixture
def lane_service():
    """A gRPC service with a lane, on free ports of 127.0.0.1; alice's token is a-token."""
    lane = BulkLane("127.0.0.1")
    service = FedstreamService({"alice": "a-token"}, run_id="run-x", lane=lane)
    server, port = start_server(service, "127.0.0.1:0", None)
    yield service, port
    service.finish()
    server.stop(grace=None)
    lane.close()


def fit_task(service, port):
    """Alice connected by hand, a fit task sent to her: (her session, the request, its lane
    offer, the inbox of its answer)."""
    alice = RawSession(port, hello("alice", "a-token"))
    service.wait_for(1, 5)
    inbox: queue.Queue = queue.Queue()
    model = bytes(1 << 20)  # its update may be 4× that and 1 MiB more
    service.send("alice", "fit", 1, {"config": {}}, model, inbox)
    request = alice.next("request").request
    return alice, request, json.loads(request.header_json)["lane"], inbox


def reply(request, **header):
    message = pb.Reply(
        task_id=request.task_id, run_id="run-x", round=1, kind="fit",
        header_json=json.dumps(header),
    )  # fmt: skip
    return [pb.ClientMessage(reply=message), *(pb.ClientMessage(chunk=c) for c in chunks(b""))]


def test_a_fit_request_offers_a_ticket_and_the_reply_gets_the_lanes_body(lane_service):
    service, port = lane_service
    alice, request, offer, inbox = fit_task(service, port)
    send_by_lane("127.0.0.1", offer["port"], offer["ticket"], BODY)
    alice.send(*reply(request, lane_bytes=len(BODY)))
    answer = inbox.get(timeout=10)
    assert answer.error is None and answer.payload == BODY
    alice.close()


@pytest.mark.parametrize("lie", ["nothing uploaded", "another size", "a payload as well"])
def test_a_reply_that_lies_about_its_lane_upload_fails_its_task(lane_service, lie):
    service, port = lane_service
    alice, request, offer, inbox = fit_task(service, port)
    if lie != "nothing uploaded":
        send_by_lane("127.0.0.1", offer["port"], offer["ticket"], BODY)
    if lie == "a payload as well":
        message = pb.Reply(
            task_id=request.task_id, run_id="run-x", round=1, kind="fit",
            header_json=json.dumps({"lane_bytes": len(BODY)}),
        )  # fmt: skip
        alice.send(
            pb.ClientMessage(reply=message), *(pb.ClientMessage(chunk=c) for c in chunks(b"x"))
        )
    else:
        alice.send(*reply(request, lane_bytes=len(BODY) + (lie == "another size")))
    answer = inbox.get(timeout=10)
    assert answer.payload == b""
    assert (
        answer.error
        == {
            "nothing uploaded": "reply says its body came by the lane, and none arrived there",
            "another size": f"lane_bytes={len(BODY) + 1} in the reply, but 3,145,728 bytes came by "
            "the lane",
            "a payload as well": (
                "reply says its body came by the lane, and sent one on the stream too"
            ),
        }[lie]
    )
    assert service.lane.take(request.task_id, "alice") is None  # nothing left behind
    alice.close()


def test_a_bulk_port_out_of_range_or_taken_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match=r"bulk_port=70000 is invalid: expected a port number"):
        open_lane("127.0.0.1:0", 70000, None)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"bulk_port={port} is invalid: expected a port"):
            open_lane("127.0.0.1:0", port, None)
    assert host_of("[::1]:50051") == "::1" and host_of("server.example.org") == "server.example.org"


@pytest.mark.parametrize(
    "offer",
    [
        None, [], {"port": 0, "ticket": "ab" * 32}, {"port": 70000, "ticket": "ab" * 32},
        {"port": "50052", "ticket": "ab" * 32}, {"port": 1, "ticket": 7},
        {"port": 1, "ticket": "not hex"}, {"port": 1, "ticket": "ab" * 10_000},
    ],
)  # fmt: skip
def test_a_client_given_a_lying_or_dead_lane_offer_sends_by_the_stream(offer):
    route = _LaneRoute("127.0.0.1:1", None)
    header = {"config": {}, "lane": offer} if offer is not None else {"config": {}}
    request = pb.Request(task_id="t", kind="fit", header_json=json.dumps(header))
    assert route.send(request, BODY) is False  # and nothing raised
    assert route.send(request, b"small") is False  # below the threshold: never the lane


def test_a_client_uses_a_live_lane_offer(lane):
    offer = {"port": lane.port, "ticket": lane.issue("t", "alice", limit=4 << 20)}
    request = pb.Request(task_id="t", kind="fit", header_json=json.dumps({"lane": offer}))
    assert _LaneRoute(f"127.0.0.1:{lane.port}", None).send(request, BODY) is True
    assert lane.take("t", "alice") == BODY
