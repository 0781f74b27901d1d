"""Deployment over gRPC with real processes and sockets on 127.0.0.1: a whole run, a client
and the server killed with SIGKILL, bad clients and bad messages, and TLS."""

import contextlib
import hashlib
import json
import queue
import shutil
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from fedstream import Params, RoundFailedError, TorchTrainer, run_round, simulate
from fedstream.deploy import join, make_tokens, serve
from fedstream.privacy import clip_l2
from fedstream.rounds import plan_round
from fedstream.secure.he import join_ciphertexts, split_ciphertexts
from fedstream.secure.secagg import pack, unpack
from fedstream.simulation.engine import build, build_dataset
from fedstream.store import RunStore, latest_checkpoint, load_checkpoint
from fedstream.transport.grpc import fedstream_pb2 as pb
from fedstream.transport.grpc import fedstream_pb2_grpc as pb_grpc
from fedstream.transport.grpc.client import ClientCredentials, ClientRefused, ServerUnreachable
from fedstream.transport.grpc.framing import CHUNK_BYTES, chunks
from fedstream.transport.grpc.server import (
    FedstreamService,
    GrpcTransport,
    ServerCredentials,
    start_server,
)
from tests.conftest import make_certificates
from tests.deploy.harness import (
    RUN,
    Process,
    RawSession,
    deploy_run,
    deployment,
    hello,
    restart_server,
    start_client,
    start_clients,
    start_server_process,
    write_run,
)
from tests.settings import make_config

pytestmark = pytest.mark.slow  # real processes and whole runs


def test_a_server_and_five_client_processes_match_the_simulation(tmp_path):
    toml, tokens, config = write_run(tmp_path)
    final, _ = deploy_run(tmp_path, toml, tokens, config)
    simulated = simulate(config)
    assert final.round == 4
    # the same arithmetic in the same order: the deployment ends bit for bit where the
    # simulation does
    assert final.params.bit_equal(simulated.state.params)
    run = RunStore(tmp_path / "store.sqlite").run("run")
    assert run["status"] == "finished" and len(run["rounds"]) == 4
    assert all(len(r["completed"]) == 5 for r in run["rounds"])
    # the traffic, counted from the wire format, is the simulation's byte for byte
    assert [r["bytes_up"] for r in run["rounds"]] == [r.bytes_up for r in simulated.reports]
    assert [r["bytes_down"] for r in run["rounds"]] == [r.bytes_down for r in simulated.reports]
    assert run["rounds"][0]["bytes_up"] == 5 * final.params.wire_size()  # 5 dense updates


def test_the_cli_servers_bulk_port_carries_large_updates_and_changes_no_number(tmp_path):
    # a 1.2 MB update (MLP 512-512 on digits): above the lane's 1 MiB threshold
    changes = {"num_clients": 2, "clients_per_round": 2, "rounds": 2, "hidden": (512, 512)}
    toml, tokens, config = write_run(tmp_path, **changes)
    final, _ = deploy_run(
        tmp_path, toml, tokens, config, "--bulk-port", "0",
        clients_said="2 update(s) by the bulk lane",
    )  # fmt: skip
    assert final.params.bit_equal(simulate(config).state.params)


def test_a_client_killed_mid_run_is_recorded_and_the_run_goes_on(tmp_path):
    toml, tokens, config = write_run(tmp_path, rounds=6, local_epochs=30, evaluate_every=0)
    server, port = start_server_process(toml, tokens, tmp_path / "run", "--round-timeout", "60")
    ids = sorted(build_dataset(config).clients)
    clients = start_clients(toml, tokens, port, ids)
    store = tmp_path / "store.sqlite"
    deadline = time.monotonic() + 120
    while not (
        store.exists() and RunStore(store).runs() and RunStore(store).runs()[0]["rounds_done"] >= 1
    ):
        assert time.monotonic() < deadline and server.popen.poll() is None, "".join(server.lines)
        time.sleep(0.05)
    clients[ids[2]].kill()
    assert server.wait() == 0, "".join(server.lines)
    run = RunStore(store).run("run")
    assert run["status"] == "finished" and len(run["rounds"]) == 6
    causes = [f["cause"] for r in run["rounds"] for f in r["failures"] if f["client_id"] == ids[2]]
    assert causes and set(causes) <= {"disconnected", "not connected"}
    assert len(run["rounds"][-1]["completed"]) == 4
    for client_id, client in clients.items():
        if client_id != ids[2]:
            assert client.wait() == 0


def test_the_server_killed_mid_run_resumes_and_its_clients_reconnect(tmp_path):
    toml, tokens, config = write_run(tmp_path, rounds=8, local_epochs=20, evaluate_every=0)
    out = tmp_path / "run"
    server, port = start_server_process(toml, tokens, out)
    clients = start_clients(toml, tokens, port, sorted(build_dataset(config).clients))
    deadline = time.monotonic() + 120
    while (found := latest_checkpoint(out / "checkpoints")) is None or found.name < "round-000003":
        assert time.monotonic() < deadline and server.popen.poll() is None, "".join(server.lines)
        time.sleep(0.05)
    killed_at, _ = restart_server(server, tokens, port, out, clients)
    assert killed_at.name < "round-000008"
    final, _ = load_checkpoint(latest_checkpoint(out / "checkpoints"))
    assert final.round == 8
    assert final.params.bit_equal(simulate(config).state.params)  # exact resume
    run = RunStore(tmp_path / "store.sqlite").run("run")
    assert run["status"] == "finished"
    assert [r["round"] for r in run["rounds"]] == list(range(1, 9))


def test_a_client_with_a_wrong_token_is_refused_and_the_others_are_served(tmp_path):
    toml, tokens, config = write_run(tmp_path, rounds=2)
    ids = sorted(build_dataset(config).clients)
    server, port = start_server_process(toml, tokens, tmp_path / "run")
    intruder = Process(
        "client", "--config", str(toml), "--server", f"127.0.0.1:{port}", "--id", ids[0],
        "--token", "not-the-token", "--insecure",
    )  # fmt: skip
    assert intruder.wait() == 1
    assert "client 'client-0' is unknown or its token is wrong" in "".join(intruder.lines)
    clients = start_clients(toml, tokens, port, ids)
    assert server.wait() == 0, "".join(server.lines)
    assert all(c.wait() == 0 for c in clients.values())


# -- bad messages, against a real server in this process --------------------------------


def session(port, *messages):
    """Open a raw Session, send ``messages``, and return what the server sent back within
    a second (or the error that ended the stream)."""
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * CHUNK_BYTES)]
    )
    outbound = list(messages)
    stream = pb_grpc.FedstreamStub(channel).Session(iter(outbound), timeout=1.5)
    received = []
    try:
        for message in stream:
            received.append(message)
    except grpc.RpcError as exc:
        return received, exc
    finally:
        channel.close()
    return received, None


def drain(stream):
    """Read a response stream to its end; the server closing it is expected."""
    with contextlib.suppress(grpc.RpcError):
        list(stream)


def test_a_connected_client_that_stops_sending_heartbeats_is_dropped():
    service = FedstreamService({"alice": "a-token"}, run_id="run-x", heartbeat_s=0.2)
    server, port = start_server(service, "127.0.0.1:0", None)
    try:

        def silent():
            yield hello("alice", "a-token")
            time.sleep(3)  # connected, never answers, no heartbeats

        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stream = pb_grpc.FedstreamStub(channel).Session(silent(), timeout=5)
        listener = threading.Thread(target=drain, args=(stream,), daemon=True)
        listener.start()
        service.wait_for(1, 5)
        inbox: queue.Queue = queue.Queue()  # where its answers come
        task = service.send("alice", "fit", 1, {}, b"", inbox)
        answer = inbox.get(timeout=5)
        assert answer.task_id == task and answer.error.startswith("no heartbeat for")
        assert service.connected() == []
        channel.close()
    finally:
        service.finish()
        server.stop(grace=None)


def test_wrong_token_unknown_client_and_missing_hello_are_refused(live_service):
    _, port = live_service
    _, error = session(port, hello("alice", "b-token"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "client 'alice' is unknown or its token is wrong" in error.details()
    _, error = session(port, hello("mallory", "x"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    _, error = session(port, pb.ClientMessage(heartbeat=pb.Heartbeat(sent_ms=1)))
    assert "the first message must be Hello" in error.details()
    old = pb.ClientMessage(hello=pb.Hello(client_id="bob", token="b-token", protocol="fedstream/0"))
    _, error = session(port, old)
    assert "protocol 'fedstream/0' is not supported" in error.details()


def test_answers_to_unknown_tasks_other_rounds_and_bad_payloads_are_refused(live_service):
    service, port = live_service
    stale = pb.ClientMessage(
        reply=pb.Reply(task_id="feed", run_id="run-x", round=3, kind="fit", header_json="{}")
    )
    nothing = hashlib.sha256(b"").hexdigest()
    empty = pb.ClientMessage(chunk=pb.Chunk(data=b"", last=True, sha256=nothing, total_bytes=0))
    received, _ = session(port, hello("alice", "a-token"), stale, empty)
    kinds = [m.WhichOneof("body") for m in received]
    assert kinds[0] == "welcome" and "refusal" in kinds
    assert "task 'feed' is unknown or already finished" in received[-1].refusal.reason

    # a real pending task answered for the wrong round
    answers = []

    def bob_session():
        def messages():
            yield hello("bob", "b-token")
            while not service.pending:
                time.sleep(0.01)
            task_id = next(iter(service.pending))
            yield pb.ClientMessage(
                reply=pb.Reply(task_id=task_id, run_id="run-x", round=99, kind="fit")
            )
            yield pb.ClientMessage(
                chunk=pb.Chunk(
                    data=b"xyz",
                    last=True,
                    total_bytes=3,
                    sha256=__import__("hashlib").sha256(b"xyz").hexdigest(),
                )
            )
            time.sleep(0.5)

        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            for message in pb_grpc.FedstreamStub(channel).Session(messages(), timeout=3):
                answers.append(message)
        except grpc.RpcError:
            pass

    thread = threading.Thread(target=bob_session)
    thread.start()
    service.wait_for(1, 5)
    inbox: queue.Queue = queue.Queue()  # where its answers come
    task = service.send("bob", "fit", 2, {}, b"params", inbox)
    while task in service.pending:
        time.sleep(0.01)
    answer = inbox.get(timeout=5)
    assert answer.task_id == task and answer.error == "answer is for round 99, expected round 2"
    thread.join()


def test_a_truncated_payload_and_an_oversized_message_end_only_that_stream(live_service):
    service, port = live_service
    alice = RawSession(port, hello("alice", "a-token"))
    alice.next("welcome")
    inbox: queue.Queue = queue.Queue()  # where its answers come
    task = service.send("alice", "fit", 1, {}, b"params", inbox)
    alice.next("request")
    reply = pb.Reply(task_id=task, run_id="run-x", round=1, kind="fit")
    lying = pb.Chunk(data=b"abc", last=True, sha256="0", total_bytes=10)
    alice.send(pb.ClientMessage(reply=reply), pb.ClientMessage(chunk=lying))
    answer = inbox.get(timeout=5)
    assert answer.task_id == task and "payload is 3 bytes, its last chunk says 10" in answer.error
    alice.close()
    unknown = pb.ClientMessage(reply=pb.Reply(task_id="t", run_id="run-x", round=1, kind="fit"))
    huge = pb.ClientMessage(chunk=pb.Chunk(data=bytes(5 * CHUNK_BYTES), last=True))
    _, error = session(port, hello("alice", "a-token"), unknown, huge)
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # the server still serves: bob connects and is welcomed
    received, _ = session(port, hello("bob", "b-token"))
    assert received and received[0].WhichOneof("body") == "welcome"


# -- TLS ---------------------------------------------------------------------------------


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_ca(tmp_path):
    ca, cert, key, client_cert, client_key = make_certificates(tmp_path)
    service = FedstreamService({"alice": "a-token"}, run_id="run-x")
    server, port = start_server(service, "localhost:0", ServerCredentials(cert, key, ca))
    try:
        from fedstream.transport.grpc.client import _channel

        def welcomed(credentials):
            channel = _channel(f"localhost:{port}", credentials)
            try:
                stream = pb_grpc.FedstreamStub(channel).Session(
                    iter([hello("alice", "a-token")]), timeout=3
                )
                return next(iter(stream)).WhichOneof("body") == "welcome"
            except grpc.RpcError as exc:
                return exc.code()
            finally:
                channel.close()

        assert welcomed(ClientCredentials(ca, client_cert, client_key)) is True
        assert welcomed(ClientCredentials(ca)) == grpc.StatusCode.UNAVAILABLE  # no cert
    finally:
        service.finish()
        server.stop(grace=None)


def test_a_payload_far_above_grpcs_message_limit_passes_in_chunks(live_service):
    service, port = live_service
    payload = np.random.default_rng(0).bytes(64 << 20)  # 64 MiB; one message may be 4 MiB

    def messages():
        yield hello("alice", "a-token")
        while not service.pending:
            time.sleep(0.01)
        task_id = next(iter(service.pending))
        yield pb.ClientMessage(reply=pb.Reply(task_id=task_id, run_id="run-x", round=1))
        yield from (pb.ClientMessage(chunk=c) for c in chunks(payload))
        time.sleep(1)

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stream = pb_grpc.FedstreamStub(channel).Session(messages(), timeout=30)
    threading.Thread(target=drain, args=(stream,), daemon=True).start()
    service.wait_for(1, 5)
    # a fit answer may be 4× the model sent (plus 1 MiB): a 16 MiB model here
    inbox: queue.Queue = queue.Queue()  # where its answers come
    task = service.send("alice", "fit", 1, {}, bytes(16 << 20), inbox)
    answer = inbox.get(timeout=30)
    assert answer.task_id == task and answer.error is None and answer.payload == payload
    channel.close()


def serve_in_thread(tmp_path, config, tokens, **settings):
    """``serve`` on localhost in a thread, once it listens: (the thread, the address to
    dial, the dict that gets its result under "run")."""
    ready = threading.Event()
    port: dict[str, int] = {}
    result: dict = {}

    def run_server():
        result["run"] = serve(
            config, tokens, listen="localhost:0", output_dir=tmp_path / "run",
            on_listening=lambda p: (port.update(p=p), ready.set()), wait_timeout_s=60,
            **settings,
        )  # fmt: skip

    thread = threading.Thread(target=run_server)
    thread.start()
    assert ready.wait(30)
    return thread, f"localhost:{port['p']}", result


def test_a_run_over_tls_and_a_client_that_cannot_verify_the_server(tmp_path):
    ca, cert, key, _, _ = make_certificates(tmp_path)
    config = make_config(**{**RUN, "rounds": 1})
    ids = sorted(build_dataset(config).clients)
    tokens = make_tokens(ids)
    thread, address, result = serve_in_thread(
        tmp_path, config, tokens, credentials=ServerCredentials(cert, key)
    )
    # a client that does not trust the server's CA never gets through
    with pytest.raises(ServerUnreachable, match="TLS handshake failed: the certificate of"):
        join(address, ids[0], tokens[ids[0]], config,
             credentials=ClientCredentials(root_ca=None), give_up_after_s=1.0)  # fmt: skip
    workers = [
        threading.Thread(
            target=join,
            args=(address, c, tokens[c], config),
            kwargs={"credentials": ClientCredentials(root_ca=ca), "give_up_after_s": 30},
        )
        for c in ids
    ]
    for worker in workers:
        worker.start()
    thread.join(timeout=120)
    assert result["run"].state.round == 1
    assert len(result["run"].reports[0].completed) == 5


def test_updates_by_the_bulk_lane_over_mutual_tls_end_where_the_simulation_does(tmp_path):
    ca, cert, key, client_cert, client_key = make_certificates(tmp_path)
    # 64·512 + 512·512 + 512·10 weights: a 1.2 MB update, above the lane's 1 MiB threshold
    config = make_config(**{**RUN, "rounds": 2, "hidden": (512, 512)})
    ids = sorted(build_dataset(config).clients)
    tokens = make_tokens(ids)
    thread, address, result = serve_in_thread(
        tmp_path, config, tokens, credentials=ServerCredentials(cert, key, client_ca=ca),
        bulk_port=0,
    )  # fmt: skip
    stats = {}
    credentials = ClientCredentials(ca, client_cert, client_key)

    def client(client_id):
        stats[client_id] = join(
            address, client_id, tokens[client_id], config, credentials=credentials,
            give_up_after_s=30,
        )  # fmt: skip

    workers = [threading.Thread(target=client, args=(c,)) for c in ids]
    for worker in workers:
        worker.start()
    thread.join(timeout=180)
    for worker in workers:
        worker.join(timeout=30)
    simulated = simulate(config)
    assert result["run"].state.params.bit_equal(simulated.state.params)
    assert [r.bytes_up for r in result["run"].reports] == [r.bytes_up for r in simulated.reports]
    assert {c: s.lane_uploads for c, s in stats.items()} == {c: 2 for c in ids}


def test_the_server_refuses_to_start_without_tls_unless_told(tmp_path):
    toml, tokens, _ = write_run(tmp_path)
    process = Process("server", "--config", str(toml), "--tokens", str(tokens))
    assert process.wait() == 2
    assert "--tls-cert=None is invalid: expected a certificate and --tls-key" in "".join(
        process.lines
    )


def test_wrong_token_from_python_raises_client_refused(live_service):
    _, port = live_service
    config = make_config(**{**RUN, "rounds": 1})
    with pytest.raises(ClientRefused, match="unknown or its token is wrong"):
        join(f"127.0.0.1:{port}", "client-0", "nope", config)


def test_server_and_clients_on_separate_virtual_hosts(tmp_path, two_hosts):
    server_ns, client_ns = two_hosts
    toml, tokens, config = write_run(tmp_path, rounds=2)
    python = [sys.executable, "-m", "fedstream.cli"]
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, *python, "server", "--config", str(toml),
         "--tokens", str(tokens), "--insecure", "--quiet", "--listen", "10.231.7.1:50051",
         "--output", str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    clients = [
        subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                client_ns,
                *python,
                "client",
                "--config",
                str(toml),
                "--server",
                "10.231.7.1:50051",
                "--id",
                c,
                "--token-file",
                str(tokens),
                "--insecure",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in sorted(build_dataset(config).clients)
    ]
    _, server_err = server.communicate(timeout=180)
    assert server.returncode == 0, server_err
    for client in clients:
        _, err = client.communicate(timeout=60)
        assert client.returncode == 0, err
    run = RunStore(tmp_path / "store.sqlite").run("run")
    assert run["status"] == "finished" and len(run["rounds"]) == 2
    assert all(len(r["completed"]) == 5 for r in run["rounds"])


@pytest.mark.parametrize(
    "changes",
    [
        {"compression": "topk:0.1"},
        {"strategy": "scaffold", "alpha": 0.1, "partition": "dirichlet"},
    ],
    ids=["error-feedback", "scaffold"],
)
def test_a_client_restarted_between_rounds_continues_from_its_saved_state(tmp_path, changes):
    """kill -9 of a client process between rounds: the new process reads the client's
    state (its error-feedback residual or SCAFFOLD control variate) from its disk, so the run
    still ends bit for bit where the simulation does. The same restart without the saved
    state does not. FedDyn's and Ditto's client state use the same store."""
    toml, tokens, config = write_run(tmp_path, rounds=3, **changes)
    ids = sorted(build_dataset(config).clients)
    expected = simulate(config).state.params

    def deployed(keep_state: bool) -> Params:
        service = FedstreamService(json.loads(tokens.read_text()), run_id=f"r-{keep_state}")
        server, port = start_server(service, "127.0.0.1:0", None)
        clients = start_clients(toml, tokens, port, ids)
        try:
            service.wait_for(len(ids), 60)
            transport = GrpcTransport(service, 60)
            state, strategy = build(config).initial, config.build_strategy()
            for round_number in range(1, 4):
                if round_number == 2:
                    clients[ids[0]].kill()
                    deadline = time.monotonic() + 30
                    while ids[0] in service.connected() and time.monotonic() < deadline:
                        time.sleep(0.05)
                    if not keep_state:
                        shutil.rmtree(toml.parent / "client-state" / ids[0])
                    clients[ids[0]] = start_client(toml, tokens, port, ids[0])
                    service.wait_for(len(ids), 60)
                state, report = run_round(
                    state, strategy, transport, ids, config.round_config(), evaluate=False
                )
                assert report.failures == ()
            return state.params
        finally:
            service.finish()
            server.stop(grace=1.0).wait()
            for client in clients.values():
                client.wait()

    assert deployed(keep_state=True).bit_equal(expected)
    assert not deployed(keep_state=False).bit_equal(expected)


def test_a_users_app_deploys_over_grpc_and_ends_where_its_simulation_does(tmp_path):
    """The server reads no client's data; each client process reads only its own, through
    the app's data function, and trains the app's own model (batch norm, dropout)."""
    app = "tests.apps.tiny:by_function"
    toml, tokens, config = write_run(tmp_path, app=app, num_clients=5, rounds=2, batch_size=8)
    assert sorted(json.loads(tokens.read_text())) == [f"site-{k}" for k in range(5)]
    final, report = deploy_run(tmp_path, toml, tokens, config)
    simulated = simulate(config)
    assert final.params.bit_equal(simulated.state.params)
    assert report.metrics == simulated.reports[-1].metrics


@pytest.mark.parametrize("secure", ["secagg+", "ckks"])
def test_secure_aggregation_and_dp_over_grpc_match_the_simulation(tmp_path, secure):
    toml, tokens, config = write_run(
        tmp_path, rounds=2, secure_aggregation=secure, dp="client", dp_noise=0.3,
        dp_adaptive_clip=True, dp_clip=0.05, dp_secure_noise=False,
    )  # fmt: skip
    final, report = deploy_run(tmp_path, toml, tokens, config)
    simulated = simulate(config)
    if secure == "secagg+":  # fixed-point sums are exact whatever the order: bit for bit
        assert final.params.bit_equal(simulated.state.params)
        assert final.clip_norm == simulated.state.clip_norm
    else:  # CKKS decryptions are noise-flooded, independently in each run (σ = 0.029)
        np.testing.assert_allclose(final.params.flat(), simulated.state.params.flat(), atol=0.1)
    assert report.metrics["dp_epsilon"] == simulated.reports[-1].metrics["dp_epsilon"]
    assert report.bytes_up > 0 and len(report.completed) == 5


def test_compressed_pruned_updates_over_grpc_match_the_simulation_bit_for_bit(tmp_path):
    # the error-feedback residual lives in each client process across rounds
    toml, tokens, config = write_run(
        tmp_path, rounds=3, compression="topk:0.1+q4", broadcast="q8", prune_fraction=0.3,
        evaluate_every=3,
    )  # fmt: skip
    final, report = deploy_run(tmp_path, toml, tokens, config)
    simulated = simulate(config)
    assert final.params.bit_equal(simulated.state.params)
    assert report.bytes_up == simulated.reports[-1].bytes_up
    assert report.bytes_down == simulated.reports[-1].bytes_down


def test_fednova_over_grpc_with_secagg_ends_where_its_simulation_does(tmp_path):
    # each client process counts its own steps; the count rides in the masked sum beside
    # the normalised delta, and fixed-point sums are exact: bit for bit
    toml, tokens, config = write_run(
        tmp_path, rounds=2, strategy="fednova", partition="quantity", local_epochs=2,
        secure_aggregation="secagg+",
    )  # fmt: skip
    final, _ = deploy_run(tmp_path, toml, tokens, config)
    simulated = simulate(config)
    assert final.params.bit_equal(simulated.state.params)
    assert not simulate(config.with_changes(strategy={"name": "fedavg"})).state.params.bit_equal(
        final.params
    )


@pytest.mark.parametrize(
    "changes",
    [{"strategy": "ditto"}, {"strategy": "fedrep", "personal": ("4",)}],
    ids=["ditto", "fedrep"],
)
def test_personal_models_stay_on_the_client_processes_and_the_run_matches_the_simulation(
    tmp_path, changes
):
    # each client process trains and evaluates its own personal model (Ditto) or head
    # (FedRep); only the shared delta and the metrics reach the server
    toml, tokens, config = write_run(tmp_path, rounds=2, partition="shards", **changes)
    final, report = deploy_run(tmp_path, toml, tokens, config)
    simulated = simulate(config)
    assert final.params.bit_equal(simulated.state.params)
    assert report.metrics == simulated.reports[-1].metrics
    assert "fed_personal_accuracy" in report.metrics  # each client's own model, evaluated


def test_a_deployed_clients_local_dp_noise_cannot_be_redrawn_by_the_server(tmp_path):
    """Over gRPC, the server plays the attack of tests/privacy/test_curious_server.py: it
    redraws local-DP noise from the task seeds it sent and subtracts it. A deployed client
    draws that noise from its OS CSPRNG, so what is left is still noise."""
    toml, tokens, config = write_run(
        tmp_path, rounds=1, dp="local", dp_noise=0.5, dp_clip=0.5, trainer="sequential"
    )
    ids = sorted(build_dataset(config).clients)
    setup = build(config)
    with deployment(toml, tokens, ids, "local-dp") as service:
        plan = plan_round(
            setup.initial, config.build_strategy(), ids, config.round_config(),
            setup.initial.generator(),
        )  # fmt: skip
        transport = GrpcTransport(service, 60)
        received = {d.client_id: d.result for d in transport.fit(setup.initial.params, plan.tasks)}
    trainer = TorchTrainer(setup.module, setup.dataset.task)
    assert len(received) == len(plan.tasks) > 0
    for task in plan.tasks:
        sent = received[task.client_id]
        clean = trainer.fit(setup.initial.params, task, setup.dataset.clients[task.client_id])
        truth = clip_l2(clean.payload, 0.5)[0]
        redraw = np.random.default_rng([task.config.seed, 0x4C4450])  # the old noise stream
        guess = Params({n: redraw.normal(0.0, 0.25, a.shape) for n, a in sent.payload.items()})
        assert np.std((sent.payload - guess - truth).flat()) > 0.3  # √2 σ: not removed
        assert 0.2 < np.std((sent.payload - truth).flat()) < 0.3  # σ = z·C = 0.25 is there


class LyingServer:
    """The real gRPC transport, with the server telling some clients at unmasking that
    ``victim`` dropped, after they signed a survivor set with it in: the move that once
    collected both kinds of share of one client. Records every share kind it receives."""

    def __init__(self, inner: GrpcTransport, victim: str, told_dropped: set[str]) -> None:
        self.inner, self.victim, self.told_dropped = inner, victim, told_dropped
        self.kinds: list[str] = []

    def fit(self, params, tasks):
        return self.inner.fit(params, tasks)

    def exchange(self, stage, round_number, requests):
        if stage == "unmask":
            requests = dict(requests)
            for client in self.told_dropped & set(requests):
                header, blob = unpack(requests[client], "unmask")
                header["survivors"] = [u for u in header["survivors"] if u != self.victim]
                requests[client] = pack(header, blob)
        for client, answer in self.inner.exchange(stage, round_number, requests):
            if stage == "unmask" and isinstance(answer, bytes):
                shares = unpack(answer, "shares")[0]["shares"]
                self.kinds += [
                    kind for owner, (_, _, kind) in shares.items() if owner == self.victim
                ]
            yield client, answer


def test_client_processes_refuse_a_lying_servers_survivor_story_over_grpc(tmp_path):
    toml, tokens, config = write_run(
        tmp_path, num_clients=7, clients_per_round=7, rounds=1, secure_aggregation="secagg+"
    )
    ids = sorted(build_dataset(config).clients)
    victim, told = ids[0], set(ids[1:4])
    with deployment(toml, tokens, ids, "lying") as service:
        lying = LyingServer(GrpcTransport(service, 60), victim, told)
        setup = build(config)
        with pytest.raises(RoundFailedError) as failed:
            run_round(
                setup.initial, config.build_strategy(), lying, ids, config.round_config(),
                evaluate=False,
            )  # fmt: skip
    refusals = {f.client_id: f.cause for f in failed.value.failures if f.stage == "unmask"}
    assert set(refusals) == told  # each client told the lie refused, in its own process
    assert all(
        "another survivor set than the one this client signed" in c for c in refusals.values()
    )
    assert "s" not in lying.kinds  # the server never held a share of the victim's mask key
    assert "cannot recover client" in str(failed.value)  # and the round failed loudly


class OracleSeeker:
    """The real gRPC transport, with the server sending the HE key holder one client's
    ciphertexts as "the aggregate" to decrypt."""

    def __init__(self, inner: GrpcTransport) -> None:
        self.inner = inner

    def fit(self, params, tasks):
        return self.inner.fit(params, tasks)

    def exchange(self, stage, round_number, requests):
        if stage == "decrypt":
            ((holder, request),) = requests.items()
            header, blob = unpack(request, "decrypt")
            victim = sorted(header["contributions"])[-1]
            count = len(header["contributions"][victim]["sha256"])
            items = split_ciphertexts(blob, "decrypt")[-count:]
            header["contributions"] = {victim: header["contributions"][victim]}
            requests = {holder: pack(header, join_ciphertexts(items))}
        yield from self.inner.exchange(stage, round_number, requests)


def test_the_he_key_holder_process_refuses_to_decrypt_one_clients_ciphertext(tmp_path):
    toml, tokens, config = write_run(
        tmp_path, num_clients=4, clients_per_round=4, rounds=1, secure_aggregation="ckks",
        he_preset="n4096",
    )  # fmt: skip
    ids = sorted(build_dataset(config).clients)
    with deployment(toml, tokens, ids, "oracle") as service:
        setup = build(config)
        with pytest.raises(RoundFailedError, match="did not return the decrypted sum") as failed:
            run_round(
                setup.initial, config.build_strategy(), OracleSeeker(GrpcTransport(service, 60)),
                ids, config.round_config(), evaluate=False,
            )  # fmt: skip
    refusal = next(f for f in failed.value.failures if f.stage == "decrypt")
    assert refusal.client_id == ids[0]  # the key holder, in its own process
    assert "at least 2 clients' signed contributions" in refusal.cause


def test_a_robust_rule_in_a_deployment_ends_where_the_simulation_does(tmp_path):
    # the rule runs on the server over the updates as the round collected them, in task
    # order, so real client processes give the simulation's model bit for bit
    toml, tokens, config = write_run(tmp_path, aggregator="multi_krum", byzantine=1)
    final, _ = deploy_run(tmp_path, toml, tokens, config)
    simulated = simulate(config)
    assert config.strategy.aggregator == "multi_krum"
    assert final.params.bit_equal(simulated.state.params)
