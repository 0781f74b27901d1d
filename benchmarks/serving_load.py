"""Serving under load, on real sockets: fedstream's server (micro-batching, following the
registry) against a plain FastAPI + PyTorch endpoint that runs one forward pass per request.

1. Fixed rates (open loop): requests of one digits row sent at ``--rates`` per second for
   ``--seconds`` each, while a new model version is published every second. Reported are
   p50/p99 latency, failures, and how many versions answered.
2. Saturation (closed loop): ``--concurrency`` clients sending back to back, for both
   servers. Reported is the throughput in requests per second.

Both servers run in their own process with one torch thread. The load generator is an
asyncio httpx client in this process, on the same 2 cores, so the latencies include its
own scheduling.

    python benchmarks/serving_load.py [--rates 100 250 500] [--seconds 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from fastapi import Request  # at module level: FastAPI resolves the handler's annotations here

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.deploy.harness import free_port

from fedstream import simulate
from fedstream.store import RunStore


def plain_server(store: str, run: str, port: int) -> None:
    """A plain endpoint: FastAPI + PyTorch, no batching, the newest model at start."""
    import torch
    import uvicorn
    from fastapi import FastAPI

    from fedstream.serving import load_model

    torch.set_num_threads(1)
    model = load_model(RunStore(store), run, None)
    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(request: Request) -> dict[str, object]:
        inputs = np.asarray((await request.json())["inputs"], dtype=np.float32)
        with torch.no_grad():
            outputs = model.module(torch.from_numpy(inputs)).numpy()
        return {"version": model.version, "outputs": outputs.tolist()}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start(command: list[str], url: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.post(f"{url}/v1/predict", json={"inputs": [[0.0] * 64]}).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{command} did not come up")


class Connections:
    """A pool of keep-alive HTTP/1.1 connections speaking just enough HTTP for this test.
    Much lighter than a general client, so the generator, on the same cores, costs the
    servers less of the CPU."""

    def __init__(self, url: str, size: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.size = host, int(port), size
        self.pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def open(self) -> None:
        for _ in range(self.size):
            self.pool.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def post(self, body: bytes) -> tuple[int, bytes]:
        reader, writer = await self.pool.get()
        try:
            writer.write(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            return status, await reader.readexactly(length)
        finally:
            self.pool.put_nowait((reader, writer))

    async def close(self) -> None:
        while not self.pool.empty():
            _, writer = self.pool.get_nowait()
            writer.close()


BODY = json.dumps({"inputs": [np.random.default_rng(0).random(64).tolist()]}).encode()


async def open_loop(url: str, rate: float, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    failures = 0
    versions: set[int] = set()
    connections = Connections(url, 128)
    await connections.open()

    async def one() -> None:
        nonlocal failures
        started = time.perf_counter()
        try:
            status, body = await connections.post(BODY)
        except (OSError, asyncio.IncompleteReadError):
            failures += 1
            return
        if status != 200:
            failures += 1
            return
        latencies.append(time.perf_counter() - started)
        versions.add(json.loads(body)["version"])

    tasks = []
    begin = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    await connections.close()
    ordered = sorted(latencies)
    return {
        "rate": rate,
        "requests": len(tasks),
        "failures": failures,
        "p50_ms": 1000 * ordered[len(ordered) // 2],
        "p99_ms": 1000 * ordered[int(len(ordered) * 0.99)],
        "versions": len(versions),
    }


async def closed_loop(url: str, concurrency: int, seconds: float) -> float:
    connections = Connections(url, concurrency)
    await connections.open()
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            status, _ = await connections.post(BODY)
            done += status == 200

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await connections.close()
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 250, 500])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--plain-server", nargs=3, metavar=("STORE", "RUN", "PORT"))
    args = parser.parse_args()
    if args.plain_server:
        store, run, port = args.plain_server
        plain_server(store, run, int(port))
        return
    with tempfile.TemporaryDirectory() as folder:
        simulate(run={"rounds": 3}, output_dir=Path(folder) / "run")
        store_path = str(Path(folder) / "store.sqlite")
        store = RunStore(store_path)
        ours_url = f"http://127.0.0.1:{(ours_port := free_port())}"
        plain_url = f"http://127.0.0.1:{(plain_port := free_port())}"
        cli = [sys.executable, "-m", "fedstream.cli"]
        ours = start([*cli, "serve", "--store", store_path, "--run", "run", "--port",
                      str(ours_port)], ours_url)  # fmt: skip
        plain = start([sys.executable, __file__, "--plain-server", store_path, "run",
                       str(plain_port)], plain_url)  # fmt: skip
        meta, blob = store.model("run", 3)
        from fedstream import Params

        base = Params.from_bytes(blob)
        stop = threading.Event()

        def swap_every_second() -> None:
            version = 4
            while not stop.wait(1.0):
                scaled = base * (1.0 + 0.01 * version)
                store.publish_model("run", version, meta["architecture"], {}, scaled.to_bytes())
                version += 1

        swapper = threading.Thread(target=swap_every_second, daemon=True)
        swapper.start()
        rows = []
        try:
            for rate in args.rates:
                row = {"benchmark": "fixed_rate", "server": "fedstream",
                       **asyncio.run(open_loop(ours_url, rate, args.seconds))}  # fmt: skip
                print(json.dumps(row), flush=True)
                rows.append(row)
            stop.set()
            saturation = {}
            for name, url in (("fedstream", ours_url), ("plain", plain_url)):
                runs = [
                    asyncio.run(closed_loop(url, args.concurrency, args.seconds)) for _ in range(3)
                ]
                saturation[name] = statistics.median(runs)
                print(json.dumps({"benchmark": "saturation", "server": name,
                                  "requests_per_s": saturation[name]}), flush=True)  # fmt: skip
        finally:
            ours.kill()
            plain.kill()
    print(f"{'rate':>6} {'requests':>9} {'failed':>7} {'p50 ms':>7} {'p99 ms':>7} {'versions':>9}")
    for r in rows:
        print(f"{r['rate']:>6.0f} {r['requests']:>9} {r['failures']:>7} {r['p50_ms']:>7.2f} "
              f"{r['p99_ms']:>7.2f} {r['versions']:>9}")  # fmt: skip
    ratio = saturation["fedstream"] / saturation["plain"]
    print(
        f"saturation ({args.concurrency} clients): fedstream {saturation['fedstream']:.0f} "
        f"req/s, plain {saturation['plain']:.0f} req/s ({ratio:.2f}×)"
    )


if __name__ == "__main__":
    main()
