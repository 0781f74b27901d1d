"""The gRPC transport's cost on loopback, in one run:

1. Upload throughput: a client sends a payload of ``--megabytes`` MB (a model update) to
   the real ``FedstreamService`` over a Session stream, chunked and hashed as in a round;
   the same by the service's bulk lane (``transport.grpc.lane``: the ticketed socket beside
   the stream, its CRC-32, then the stream's reply that claims the body); and a raw TCP
   socket sending the same bytes (``sendall`` into a reader thread). The three alternate,
   ``--repeats`` times; medians.
2. Per-round overhead: the default digits job with 10 clients, all sampled every round,
   run in process and then as a gRPC server with 10 client processes (no TLS). Compared
   are the server's median wall time per round (``RoundReport.times["total_s"]``) and the
   final accuracy, which must be equal.

    python benchmarks/grpc_transport.py [--megabytes 100] [--rounds 10] [--repeats 3]
        [--upload-only]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from fedstream import simulate
from fedstream.deploy import make_tokens
from fedstream.simulation import SimulationConfig, from_mapping
from fedstream.simulation.engine import build_dataset
from fedstream.store import RunStore
from fedstream.transport.grpc import fedstream_pb2 as pb
from fedstream.transport.grpc import fedstream_pb2_grpc as pb_grpc
from fedstream.transport.grpc.framing import chunks
from fedstream.transport.grpc.lane import BulkLane, send_by_lane
from fedstream.transport.grpc.server import PROTOCOL, Answer, FedstreamService, start_server


def grpc_upload_mb_s(payload: bytes) -> float:
    service = FedstreamService({"c": "t"}, run_id="bench")
    server, port = start_server(service, "127.0.0.1:0", None)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    ready = threading.Event()
    task_box: dict[str, str] = {}

    def messages() -> Iterator[pb.ClientMessage]:
        yield pb.ClientMessage(hello=pb.Hello(client_id="c", token="t", protocol=PROTOCOL))
        ready.wait()
        reply = pb.Reply(task_id=task_box["id"], run_id="bench", round=1, kind="upload")
        task_box["start"] = str(time.perf_counter())
        yield pb.ClientMessage(reply=reply)
        for chunk in chunks(payload):
            yield pb.ClientMessage(chunk=chunk)
        time.sleep(1.0)

    stream = pb_grpc.FedstreamStub(channel).Session(messages())  # type: ignore[no-untyped-call]

    def drain() -> None:
        with contextlib.suppress(grpc.RpcError):  # the server stopping cancels the stream
            list(stream)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    service.wait_for(1, 10)
    # a kind with no size of its own (as a secure-sum stage): a fit answer may be at most
    # 4× the model sent, and no model is sent here
    inbox: queue.Queue[Answer] = queue.Queue()
    task_box["id"] = service.send("c", "upload", 1, {}, b"", inbox) or ""
    ready.set()
    answer = inbox.get(timeout=300)
    elapsed = time.perf_counter() - float(task_box["start"])
    assert len(answer.payload) == len(payload) and answer.error is None
    service.finish()
    server.stop(grace=None)
    channel.close()
    return len(payload) / elapsed / 1e6


def lane_upload_mb_s(payload: bytes) -> float:
    """A fit update by the bulk lane, timed from its upload to the service's answer (which
    waits for the stream's reply claiming it), as a deployed client sends it."""
    lane = BulkLane("127.0.0.1")
    service = FedstreamService({"c": "t"}, run_id="bench", lane=lane)
    server, port = start_server(service, "127.0.0.1:0", None)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    outbound: queue.Queue[pb.ClientMessage | None] = queue.Queue()
    outbound.put(pb.ClientMessage(hello=pb.Hello(client_id="c", token="t", protocol=PROTOCOL)))
    stream = pb_grpc.FedstreamStub(channel).Session(iter(outbound.get, None))  # type: ignore[no-untyped-call]
    requests: queue.Queue[pb.Request] = queue.Queue()

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):  # the server stopping cancels the stream
            for message in stream:
                if message.WhichOneof("body") == "request":
                    requests.put(message.request)

    threading.Thread(target=read, daemon=True).start()
    service.wait_for(1, 10)
    inbox: queue.Queue[Answer] = queue.Queue()
    model = bytes(len(payload) // 4 + 1)  # an update may be 4× the model sent
    service.send("c", "fit", 1, {"config": {}}, model, inbox)
    request = requests.get(timeout=60)
    offer = json.loads(request.header_json)["lane"]
    started = time.perf_counter()
    send_by_lane("127.0.0.1", offer["port"], offer["ticket"], payload)
    header = json.dumps({"lane_bytes": len(payload)})
    reply = pb.Reply(
        task_id=request.task_id, run_id="bench", round=1, kind="fit", header_json=header
    )
    outbound.put(pb.ClientMessage(reply=reply))
    for chunk in chunks(b""):
        outbound.put(pb.ClientMessage(chunk=chunk))
    answer = inbox.get(timeout=300)
    elapsed = time.perf_counter() - started
    assert len(answer.payload) == len(payload) and answer.error is None, answer.error
    outbound.put(None)
    service.finish()
    server.stop(grace=None)
    channel.close()
    lane.close()
    return len(payload) / elapsed / 1e6


def socket_mb_s(payload: bytes) -> float:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received = bytearray()
    done = threading.Event()

    def read() -> None:
        connection, _ = listener.accept()
        with connection:
            while len(received) < len(payload):
                block = connection.recv(1 << 20)
                if not block:
                    break
                received.extend(block)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    with socket.create_connection(("127.0.0.1", port)) as sender:
        started = time.perf_counter()
        sender.sendall(payload)
        done.wait()
        elapsed = time.perf_counter() - started
    listener.close()
    assert len(received) == len(payload)
    return len(payload) / elapsed / 1e6


def round_times(config: SimulationConfig, folder: Path) -> tuple[float, float, float, float]:
    """(in-process median s/round, gRPC median s/round, accuracy in process, over gRPC)."""
    local = simulate(config)
    local_median = statistics.median(r.times["total_s"] for r in local.reports)
    toml = folder / "run.toml"
    toml.write_text(config.to_toml())
    tokens = folder / "tokens.json"
    tokens.write_text(json.dumps(make_tokens(sorted(build_dataset(config).clients))))
    cli = [sys.executable, "-m", "fedstream.cli"]
    server = subprocess.Popen(
        [*cli, "server", "--config", str(toml), "--tokens", str(tokens), "--insecure",
         "--quiet", "--listen", "127.0.0.1:0", "--output", str(folder / "run")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stderr is not None
    line = server.stderr.readline()
    while "listening on port" not in line:
        line = server.stderr.readline()
    port = int(line.split("port")[1].split(",")[0])
    clients = [
        subprocess.Popen(
            [
                *cli,
                "client",
                "--config",
                str(toml),
                "--server",
                f"127.0.0.1:{port}",
                "--id",
                c,
                "--token-file",
                str(tokens),
                "--insecure",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for c in sorted(build_dataset(config).clients)
    ]
    server.wait(timeout=600)
    for client in clients:
        client.wait(timeout=60)
    run = RunStore(folder / "store.sqlite").run("run")
    remote_median = statistics.median(r["times"]["total_s"] for r in run["rounds"])
    return (
        local_median,
        remote_median,
        local.final_metrics["central_accuracy"],
        run["rounds"][-1]["metrics"]["central_accuracy"],
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--upload-only", action="store_true", help="skip the rounds")
    args = parser.parse_args()
    payload = bytes(range(256)) * (args.megabytes * 1_000_000 // 256)
    runs: dict[str, list[float]] = {"grpc": [], "lane": [], "socket": []}
    for _ in range(args.repeats):  # interleaved: the machine's load hits all three alike
        runs["grpc"].append(grpc_upload_mb_s(payload))
        runs["lane"].append(lane_upload_mb_s(payload))
        runs["socket"].append(socket_mb_s(payload))
    upload: dict[str, Any] = {
        "benchmark": "upload",
        "megabytes": len(payload) / 1e6,
        **{f"{name}_mb_s": statistics.median(values) for name, values in runs.items()},
        **{f"{name}_runs_mb_s": [round(v) for v in values] for name, values in runs.items()},
    }
    upload["grpc_over_socket"] = upload["grpc_mb_s"] / upload["socket_mb_s"]
    upload["lane_over_socket"] = upload["lane_mb_s"] / upload["socket_mb_s"]
    print(json.dumps(upload), flush=True)
    print(
        f"upload of {upload['megabytes']:.0f} MB: gRPC stream {upload['grpc_mb_s']:.0f} MB/s "
        f"({upload['grpc_over_socket']:.2f}×), bulk lane {upload['lane_mb_s']:.0f} MB/s "
        f"({upload['lane_over_socket']:.2f}×), raw socket {upload['socket_mb_s']:.0f} MB/s"
    )
    if args.upload_only:
        return

    config = from_mapping(
        {
            "data": {"num_clients": 10},
            "run": {"clients_per_round": 10, "rounds": args.rounds, "evaluate_every": args.rounds},
            "execution": {"trainer": "sequential"},
        }
    )
    timings = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            timings.append(round_times(config, Path(folder)))
    local_s, remote_s, local_acc, remote_acc = (
        statistics.median(t[i] for t in timings) for i in range(4)
    )
    rounds = {
        "benchmark": "round_overhead",
        "clients": 10,
        "inprocess_s_per_round": local_s,
        "grpc_s_per_round": remote_s,
        "overhead_ms_per_round": (remote_s - local_s) * 1000,
        "accuracy_inprocess": local_acc,
        "accuracy_grpc": remote_acc,
    }
    print(json.dumps(rounds), flush=True)
    print(
        f"round, 10 clients: in process {local_s * 1000:.0f} ms, gRPC {remote_s * 1000:.0f} ms "
        f"(+{rounds['overhead_ms_per_round']:.0f} ms); accuracy {local_acc:.4f} / {remote_acc:.4f}"
    )


if __name__ == "__main__":
    main()
