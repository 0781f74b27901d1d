"""A 10-client deployment's wall time with and without 1,000 idle streams (issue 18, item 3).

The server and the 10 clients are real processes on 127.0.0.1; the attacker, from
127.0.0.2, holds 1,000 connections that each keep a ``Session`` stream open without ever
sending a Hello, and opens a new one whenever the server ends it (``tests/deploy/idle.py``).
Measured per run: seconds from the clients' start to the last round recorded, and the
streams the server refused or timed out. Runs alternate, quiet then attacked, so both see
the same machine.

    python benchmarks/idle_connections.py [--repeats 3] [--rounds 3] [--idle 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.deploy.harness import (
    client_ids,
    start_clients,
    start_server_process,
    write_run,
)
from tests.deploy.idle import IdleStreams

from fedstream.store import RunStore


def one_run(folder: Path, rounds: int, idle: int) -> dict[str, float]:
    toml, tokens, config = write_run(
        folder, num_clients=10, clients_per_round=10, rounds=rounds, evaluate_every=0
    )
    server, port = start_server_process(toml, tokens, folder / "run")
    attack = IdleStreams(port, idle) if idle else None
    try:
        if attack is not None:
            attack.__enter__()
            time.sleep(1.0)
        started = time.monotonic()
        clients = start_clients(toml, tokens, port, client_ids(config))
        store = folder / "store.sqlite"
        while not (store.exists() and RunStore(store).runs()
                   and RunStore(store).runs()[0]["rounds_done"] >= rounds):  # fmt: skip
            if server.popen.poll() is not None:
                raise RuntimeError("".join(server.lines))
            time.sleep(0.1)
        seconds = time.monotonic() - started
        held = attack.open_connections() if attack is not None else 0
        reopened = attack.resets if attack is not None else 0
    finally:
        if attack is not None:
            attack.__exit__(None, None, None)
    server.wait(timeout=120)
    for client in clients.values():
        client.wait(timeout=60)
    run = RunStore(folder / "store.sqlite").run("run")
    complete = all(len(r["completed"]) == 10 for r in run["rounds"])
    return {"seconds": seconds, "held": held, "reopened": reopened, "complete": complete}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=int, default=1000)
    args = parser.parse_args()
    results: dict[int, list[dict[str, float]]] = {0: [], args.idle: []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for idle in (0, args.idle):
                folder = Path(scratch) / f"{repeat}-{idle}"
                folder.mkdir()
                result = one_run(folder, args.rounds, idle)
                results[idle].append(result)
                print(json.dumps({"bench": "idle_connections", "idle": idle, **result}))
    quiet = statistics.median(r["seconds"] for r in results[0])
    attacked = statistics.median(r["seconds"] for r in results[args.idle])
    print(f"\n{'idle streams':>13} {'median s':>9} {'all rounds complete':>20}")
    for idle, runs in results.items():
        median = statistics.median(r["seconds"] for r in runs)
        print(f"{idle:>13} {median:>9.1f} {all(r['complete'] for r in runs)!s:>20}")
    print(f"attacked / quiet: {attacked / quiet:.2f}")


if __name__ == "__main__":
    main()
