"""The gRPC fleet of the asynchronous loop, driven by hand-played clients on a real
server in this process: a task ends with its client's answer, a lie about its model
version, its deadline or its client's drop, and the loop is woken when a client it
waits for connects."""

import numpy as np
import pytest

from fedstream import ClientFailure, ClientUpdate, FitConfig, Params
from fedstream.client.base import FitTask
from fedstream.rounds.fleet import Version
from fedstream.transport.grpc import fedstream_pb2 as pb
from fedstream.transport.grpc.fleet import GrpcFleet
from fedstream.transport.grpc.framing import chunks
from fedstream.transport.grpc.server import FedstreamService, start_server
from tests.deploy.harness import RawSession, hello

PARAMS = Params({"w": np.arange(4, dtype=np.float32)})
VERSION = Version(PARAMS, FitConfig(), PARAMS, None, None)


@pytest.fixture
def served():
    service = FedstreamService({"alice": "a", "bob": "b", "carol": "c"}, run_id="run-x")
    server, port = start_server(service, "127.0.0.1:0", None)
    yield service, port
    service.finish()
    server.stop(grace=None)


def connect(port, client_id):
    client = RawSession(port, hello(client_id, client_id[0]))
    client.next("welcome")
    return client


def answer(client, round_number, header, payload=b""):
    """Answer the next request on ``client``'s stream; its task id."""
    request = client.next("request").request
    reply = pb.Reply(
        task_id=request.task_id, run_id="run-x", round=round_number, kind="fit",
        header_json=header,
    )  # fmt: skip
    client.send(pb.ClientMessage(reply=reply))
    client.send(*(pb.ClientMessage(chunk=piece) for piece in chunks(payload)))
    return request.task_id


def failure_of(ended):
    (delivery,) = ended.deliveries
    assert isinstance(delivery.result, ClientFailure)
    return delivery.result.cause


def test_tasks_end_by_answer_lie_deadline_or_drop_and_a_connection_wakes_the_loop(served):
    service, port = served
    fleet = GrpcFleet(service, task_timeout_s=1.0)
    alice, bob = connect(port, "alice"), connect(port, "bob")
    service.wait_for(2, 5)
    assert fleet.ready(["alice", "bob", "carol"], 0.0) == ["alice", "bob"]
    fleet.start(FitTask("alice", 3, FitConfig()), VERSION, 0.0)
    fleet.start(FitTask("bob", 3, FitConfig()), VERSION, 0.0)
    # alice claims to have trained model version 5, which she was never sent
    answer(alice, 5, "{}")
    lie = fleet.next()
    assert lie is not None and lie.event.task.client_id == "alice"
    assert failure_of(lie) == "answer is for round 5, expected round 3"
    assert fleet.outstanding(3)  # bob's task still is
    # bob never answers: his task fails at its deadline, and the server forgets it
    late = fleet.next()
    assert late is not None and late.event.task.client_id == "bob"
    assert failure_of(late) == "no answer within task_timeout=1 s"
    assert not fleet.outstanding(3) and not service.pending
    # a client that drops mid-task ends its task at once
    fleet.start(FitTask("alice", 4, FitConfig()), VERSION, 0.0)
    alice.next("request")
    alice.close()
    dropped = fleet.next()
    assert dropped is not None and failure_of(dropped) == "disconnected"
    # no idle client connected: nothing is ready, and carol's connection wakes the loop
    assert fleet.ready(["carol"], 0.0) == []
    carol = connect(port, "carol")
    woken = fleet.next()
    assert woken is not None and woken.event.task is None
    # an honest answer, and the bytes each way counted from the wire
    assert fleet.ready(["carol"], 0.0) == ["carol"]
    fleet.start(FitTask("carol", 4, FitConfig()), VERSION, 0.0)
    update = Params({"w": np.ones(4, dtype=np.float32)}).to_bytes()
    answer(carol, 4, '{"round": 4, "weight": 2.0, "metrics": {"loss": 0.5}}', update)
    honest = fleet.next()
    assert honest is not None
    (delivery,) = honest.deliveries
    assert isinstance(delivery.result, ClientUpdate)
    assert delivery.result.weight == 2.0 and delivery.result.metrics == {"loss": 0.5}
    assert delivery.bytes_down == len(PARAMS.to_bytes()) and delivery.bytes_up == len(update)
    assert 0.0 < honest.event.started <= honest.event.time
    assert [e.event.order for e in (lie, late, dropped, woken, honest)] == [0, 1, 2, 3, 4]
    bob.close()
    carol.close()


def test_with_no_task_out_and_no_client_to_start_the_fleet_reports_nothing_will_happen(served):
    service, _ = served
    fleet = GrpcFleet(service, task_timeout_s=0.3)
    assert fleet.ready(["alice"], 0.0) == []
    assert fleet.next() is None


def test_a_resumed_fleet_goes_on_from_the_checkpoints_time_with_nothing_in_flight(served):
    service, _ = served
    fleet = GrpcFleet(service, task_timeout_s=1.0)
    saved = GrpcFleet(service, 1.0).in_flight(123.5, {})
    assert fleet.restore(saved, {}) == set()
    assert 123.5 <= fleet.now() < 124.5
    assert saved.events == () and saved.versions == {}
