"""A soak of the whole deployment under bad luck and one liar (issue 18).

Real processes on 127.0.0.1: a gRPC server with 20 clients, one of which declares 10^12
examples on minus the model (``tests/deploy/liar.py``); a serving process that the server
publishes every round to; a load of ``--rate`` predictions per second against it; and,
every few seconds, an honest client killed with SIGKILL and restarted from its state
folder. At the end it checks that nothing was lost: every round is in the store and in
results.json, the served versions are every round's, the newest served model is the final
checkpoint's bit for bit, no prediction got a 5xx, and the liar was left out of every round
that sampled it.

    python benchmarks/soak.py [--minutes 30] [--rate 200] [--kill-every 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.deploy.harness import (
    Process,
    client_ids,
    free_port,
    start_client,
    start_server_process,
    write_run,
)

from fedstream import Params
from fedstream.store import RunStore, latest_checkpoint, load_checkpoint

SECONDS_PER_ROUND = 0.25  # on the 2-core machine, kills included: sets the rounds for --minutes


def load(url: str, rate: float, stop: threading.Event, statuses: Counter[int]) -> None:
    """``rate`` predictions per second from 4 threads, each status counted."""
    rows = np.ones((1, 64)).tolist()

    def worker() -> None:
        with httpx.Client(timeout=10) as client:
            period, due = 4 / rate, time.monotonic()
            while not stop.is_set():
                try:
                    statuses[
                        client.post(f"{url}/v1/predict", json={"inputs": rows}).status_code
                    ] += 1
                except httpx.TransportError:
                    statuses[0] += 1  # no answer at all
                due += period
                time.sleep(max(0.0, due - time.monotonic()))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between kills")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="fedstream-soak-"))
    spawned: list[Process] = []
    try:
        passed = soak(args, scratch, spawned)
    finally:  # however it ends, nothing it started outlives it
        for process in spawned:
            if process.popen.poll() is None:
                process.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(0 if passed else 1)


def soak(args: argparse.Namespace, scratch: Path, spawned: list[Process]) -> bool:
    """The soak in ``scratch``; every process it starts goes into ``spawned``. Whether
    every check passed."""
    chance = random.Random(args.seed)
    rounds = max(3, int(args.minutes * 60 / SECONDS_PER_ROUND))
    toml, tokens, config = write_run(
        scratch, num_clients=20, clients_per_round=10, rounds=rounds, evaluate_every=10
    )
    ids = client_ids(config)
    liar = ids[-1]
    token_file = scratch / "publish.token"
    token_file.write_text("soak-token\n")
    serve_port = free_port()
    serving = Process(
        "serve", "--store", str(scratch / "serving.sqlite"), "--run", "remote",
        "--port", str(serve_port), "--publish-token-file", str(token_file),
    )  # fmt: skip
    spawned.append(serving)
    url = f"http://127.0.0.1:{serve_port}"
    server, port = start_server_process(
        toml, tokens, scratch / "run", "--round-timeout", "15",
        "--publish-to", url, "--publish-token-file", str(token_file),
    )  # fmt: skip
    clients = {c: start_client(toml, tokens, port, c) for c in ids[:-1]}
    liar_process = Process(
        str(toml), str(port), liar, str(tokens), "weight", module="tests.deploy.liar"
    )
    spawned += [server, liar_process, *clients.values()]
    started = time.monotonic()
    deadline = started + 300
    while True:  # the load starts once the first round's model is served
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.popen.poll() is not None:
            raise RuntimeError("".join(server.lines + serving.lines))
        time.sleep(0.2)
    statuses: Counter[int] = Counter()
    stop = threading.Event()
    loader = threading.Thread(target=load, args=(url, args.rate, stop, statuses), daemon=True)
    loader.start()
    kills = 0
    next_kill = time.monotonic() + args.kill_every
    while server.popen.poll() is None:
        if time.monotonic() >= next_kill:
            victim = chance.choice(ids[:-1])
            os.kill(clients[victim].popen.pid, signal.SIGKILL)
            clients[victim].popen.wait()
            time.sleep(chance.uniform(0, 5))
            clients[victim] = start_client(toml, tokens, port, victim)
            spawned.append(clients[victim])
            kills += 1
            next_kill = time.monotonic() + chance.uniform(0.5, 1.5) * args.kill_every
        time.sleep(0.2)
    took = time.monotonic() - started
    time.sleep(2.0)  # the last publish reaches the serving process
    stop.set()
    loader.join(timeout=30)
    # a client restarted as the run ended may have missed the server's goodbye: it would
    # retry until its give-up time, so it is stopped here (and counted)
    stragglers = 0
    for process in (*clients.values(), liar_process):
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            stragglers += 1
    last = latest_checkpoint(scratch / "run" / "checkpoints")
    assert last is not None, "the soak run left no checkpoint"
    final, _ = load_checkpoint(last)
    run = RunStore(scratch / "store.sqlite").run("run")
    results = json.loads((scratch / "run" / "results.json").read_text())
    served = RunStore(scratch / "serving.sqlite")
    versions = [m["version"] for m in served.models("remote")]
    _, newest = served.model("remote")
    liar_rounds = [r for r in run["rounds"] if liar in r["sampled"]]
    liar_refused = all(
        any(f["client_id"] == liar and "outlier" in f["cause"] for f in r["failures"])
        for r in liar_rounds
    )
    checks = {
        "server exit": server.popen.returncode == 0,
        "rounds in store": [r["round"] for r in run["rounds"]] == list(range(1, rounds + 1)),
        "rounds in results.json": len(results["rounds"]) == rounds,
        "every round served": versions == list(range(1, rounds + 1)),
        "newest served = final checkpoint": Params.from_bytes(newest).bit_equal(final.params),
        "no 5xx, no unanswered request": not any(s == 0 or s >= 500 for s in statuses),
        "liar refused every round": liar_refused and bool(liar_rounds),
    }
    completed = [len(r["completed"]) for r in run["rounds"]]
    summary = {
        "bench": "soak", "minutes": round(took / 60, 1), "rounds": rounds, "kills": kills,
        "stragglers": stragglers, "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in statuses.items()},
        "median_completed": statistics.median(completed), "min_completed": min(completed),
        "final_accuracy": run["rounds"][-1]["metrics"].get("central_accuracy"),
        "checks": checks,
    }  # fmt: skip
    print(json.dumps(summary))
    print(f"\n{'check':<34} ok")
    for name, ok in checks.items():
        print(f"{name:<34} {ok}")
    return all(checks.values())


if __name__ == "__main__":
    main()
