"""Scale of the asynchronous gRPC server (issue 21, benchmark 3).

The server is this process: the real ``FedstreamService``, ``GrpcFleet`` and FedBuff loop
(``run_buffered``) on 127.0.0.1, with a small model (650 float32 entries). The clients are
a load generator in ``--processes`` other processes (``--generate`` mode of this file):
asyncio gRPC, one channel (one TCP connection) and one ``Session`` stream per client,
each answering every fit request at once with an update of the model's layout and
sending heartbeats. Connections are opened at most 8 at a time per process, as the
server's handshake guard allows 16 awaiting their Hello from one address.

Measured per run: seconds until every client is connected; then, over ``--steps`` server
steps of K = ``--buffer`` updates with every client training at once (concurrency =
clients): updates accepted per second, the server's CPU (user + system seconds per wall
second, from ``getrusage``), its resident memory and threads at the end, and its peak
resident memory.

    python benchmarks/async_scale.py [--clients 1000 2000] [--steps 40] [--buffer 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedstream import FedAvg, Params, RoundConfig, ServerState
from fedstream.rounds.buffered import BufferConfig, run_buffered
from fedstream.transport.grpc import fedstream_pb2 as pb
from fedstream.transport.grpc import fedstream_pb2_grpc as pb_grpc
from fedstream.transport.grpc.framing import Assembler, chunks
from fedstream.transport.grpc.server import (
    PROTOCOL,
    FedstreamService,
    GrpcTransport,
    start_server,
)

MODEL = Params({"w": np.zeros((64, 10), dtype=np.float32), "b": np.zeros(10, dtype=np.float32)})


IDLE_S = 10.0  # how long the held connections' cost is measured before the run


def token(client_id: str) -> str:
    return f"token-of-{client_id}"


# -- the load generator ----------------------------------------------------------------


async def one_client(
    address: str, client_id: str, gate: asyncio.Semaphore, done: list[int]
) -> None:
    """A client that answers every fit at once, with heartbeats, until the run ends."""
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.keepalive_time_ms", 10_000)]
    async with grpc_aio().insecure_channel(address, options=options) as channel:
        writing = asyncio.Lock()
        async with gate:  # at most a few awaiting their welcome at once
            call = pb_grpc.FedstreamStub(channel).Session()  # type: ignore[no-untyped-call]
            hello = pb.Hello(client_id=client_id, token=token(client_id), protocol=PROTOCOL)
            await call.write(pb.ClientMessage(hello=hello))
            welcome = await call.read()
        beat = welcome.welcome.heartbeat_s

        async def write(*messages: pb.ClientMessage) -> None:
            async with writing:
                for message in messages:
                    await call.write(message)

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(beat)
                await write(pb.ClientMessage(heartbeat=pb.Heartbeat(sent_ms=0)))

        beating = asyncio.create_task(heartbeat())
        request, assembler = None, None
        skipping = False
        try:
            while True:
                message = await call.read()
                if message is grpc_aio().EOF:
                    return
                kind = message.WhichOneof("body")
                if kind == "request" and message.request.kind == "evaluate":
                    evaluation = {"num_examples": 1, "metrics": {}}
                    reply = pb.Reply(
                        task_id=message.request.task_id, run_id=message.request.run_id,
                        round=message.request.round, kind="evaluate",
                        header_json=json.dumps(evaluation),
                    )  # fmt: skip
                    await write(pb.ClientMessage(reply=reply))
                    skipping = True  # its payload (the model) is not needed
                elif kind == "chunk" and skipping:
                    skipping = not message.chunk.last
                    if not skipping:
                        await write(*(pb.ClientMessage(chunk=c) for c in chunks(b"")))
                elif kind == "request":
                    request, assembler = message.request, Assembler(1 << 26, "request")
                elif kind == "chunk" and request is not None and assembler is not None:
                    payload = assembler.add(message.chunk)
                    if payload is None:
                        continue
                    update = Params.from_bytes(payload)
                    delta = Params({n: np.full_like(a, 1e-3) for n, a in update.items()})
                    header = {"round": request.round, "weight": 1.0, "metrics": {}}
                    reply = pb.Reply(
                        task_id=request.task_id, run_id=request.run_id, round=request.round,
                        kind="fit", header_json=json.dumps(header),
                    )  # fmt: skip
                    pieces = [pb.ClientMessage(chunk=c) for c in chunks(delta.to_bytes())]
                    await write(pb.ClientMessage(reply=reply), *pieces)
                    done[0] += 1
                    request, assembler = None, None
                elif kind == "refusal":
                    return
        except Exception:  # the run ended: the stream is closed
            return
        finally:
            beating.cancel()


def grpc_aio() -> ModuleType:
    """``grpc.aio``, imported on first use."""
    import grpc.aio

    return cast(ModuleType, grpc.aio)  # grpc ships no type information


async def generate(address: str, ids: list[str]) -> None:
    gate = asyncio.Semaphore(8)
    done = [0]
    await asyncio.gather(*(one_client(address, c, gate, done) for c in ids))
    print(json.dumps({"generator_updates": done[0]}), flush=True)


# -- the server --------------------------------------------------------------------------


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(clients: int, steps: int, buffer: int, processes: int) -> dict[str, Any]:
    ids = [f"c{i:05d}" for i in range(clients)]
    service = FedstreamService({c: token(c) for c in ids}, run_id="scale", heartbeat_s=5.0)
    server, port = start_server(service, "127.0.0.1:0", None)
    share = -(-clients // processes)
    began = time.monotonic()
    generators = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--generate",
                f"127.0.0.1:{port}",
                *ids[k * share : (k + 1) * share],
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(processes)
    ]
    try:
        service.wait_for(clients, timeout_s=600)
        connect_s = time.monotonic() - began
        cpu_idle, idle_began = cpu_s(), time.monotonic()
        time.sleep(IDLE_S)  # every client connected, none asked anything: the holding cost
        idle_cpu = (cpu_s() - cpu_idle) / (time.monotonic() - idle_began)
        transport = GrpcTransport(service, round_timeout_s=120)
        settings = BufferConfig(buffer_size=buffer, concurrency=clients)
        initial = ServerState.initial(MODEL, seed=0)
        cpu0, wall0 = cpu_s(), time.monotonic()
        step_walls: list[float] = []
        failures = 0
        causes: Counter[str] = Counter()
        loop = run_buffered(
            initial, FedAvg(), transport, ids, RoundConfig(evaluate_every=0), settings,
            transport.fleet(), steps,
        )  # fmt: skip
        for _, report in loop:
            step_walls.append(time.monotonic())
            failures += len(report.failures)
            causes.update(f.cause[:60] for f in report.failures)
        wall = time.monotonic() - wall0
        cpu = cpu_s() - cpu0
        result = {
            "clients": clients,
            "connected": len(service.connected()),
            "connect_s": round(connect_s, 2),
            "steps": steps,
            "buffer": buffer,
            "updates_per_s": round(steps * buffer / wall, 1),
            "step_ms_median": round(float(np.median(np.diff([wall0, *step_walls]))) * 1000, 1),
            "steady_updates_per_s": round(
                buffer / float(np.median(np.diff([wall0, *step_walls]))), 1
            ),
            "server_cpu_per_s": round(cpu / wall, 2),
            "server_idle_cpu_per_s": round(idle_cpu, 3),
            "server_rss_mb": round(rss_mb(), 1),
            "server_peak_rss_mb": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
            ),
            "server_threads": threading.active_count(),
            "failures": failures,
            "failure_causes": dict(causes.most_common(3)),
        }
    finally:
        service.finish()
        server.stop(grace=2.0).wait()
        for generator in generators:
            generator.wait(timeout=60)
    return result


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--generate":
        asyncio.run(generate(sys.argv[2], sys.argv[3:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--buffer", type=int, default=100)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for clients in args.clients:
        row = one_run(clients, args.steps, args.buffer, args.processes)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print()
    print(
        "| clients | connect s | idle CPU/s | updates/s (all steps) | updates/s (median step) "
        "| server CPU/s | RSS MB | threads |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['connected']:,} | {r['connect_s']} | {r['server_idle_cpu_per_s']} | "
            f"{r['updates_per_s']:,} | {r['steady_updates_per_s']:,} | "
            f"{r['server_cpu_per_s']} | {r['server_rss_mb']} | {r['server_threads']} |"
        )


if __name__ == "__main__":
    main()
