"""A full 22.7M-parameter transformer (and its LoRA adapters) federated over real gRPC.

all-MiniLM-L6-v2 on the Shakespeare verse-or-prose task, fine-tuned in full (every parameter sent:
91 MB each way per client per round) or with LoRA, as a real deployment on 127.0.0.1:
``fedstream server`` and ``--clients`` ``fedstream client`` processes (no TLS), every
client sampled every round. Each process runs under ``/usr/bin/time -v``, so its peak
resident memory is its own. Reports the server's median seconds per round, the bytes each
client sends and receives per round, and the peak memory of the server and of the largest
client.

    python benchmarks/llm_grpc.py [--tuning full lora] [--clients 3] [--rounds 2]

Prints one JSON line per tuning and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedstream.deploy import make_tokens, write_tokens
from fedstream.store import RunStore

HERE = Path(__file__).resolve().parent


def __getattr__(name: str) -> Any:
    """``full`` / ``lora``: the verse-or-prose app with that tuning over ``LLM_GRPC_CLIENTS`` roles
    (the module is named as the app by the run file, in every process)."""
    if name in ("full", "lora"):
        from fedstream.llm.shakespeare import speech_app

        clients = int(os.environ["LLM_GRPC_CLIENTS"])
        return speech_app(tuning="full" if name == "full" else "lora", clients=clients, heldout=200)
    raise AttributeError(name)


def timed(*args: str) -> subprocess.Popen[str]:
    """A fedstream CLI process under ``/usr/bin/time -v`` (its report goes to stderr)."""
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "fedstream.cli", *args]
    return subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )


def client(run: Path, folder: Path, port: int, k: int, client_id: str) -> subprocess.Popen[str]:
    return timed(
        "client", "--config", str(run), "--server", f"127.0.0.1:{port}", "--id", client_id,
        "--token-file", str(folder / "tokens.json"), "--insecure",
        "--state-dir", str(folder / "state" / str(k)),
    )  # fmt: skip


def peak_mb(report: str) -> float:
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report)
    return int(match.group(1)) / 1024 if match else float("nan")


def deploy(tuning: str, clients: int, rounds: int, folder: Path) -> dict[str, Any]:
    os.environ["LLM_GRPC_CLIENTS"] = str(clients)
    from fedstream.llm.shakespeare import speech_app

    ids = speech_app(tuning="head", clients=clients, heldout=1).ids()
    run = folder / "run.toml"
    run.write_text(
        f'[model]\napp = "llm_grpc:{tuning}"\n'
        f"[run]\nrounds = {rounds}\nclients_per_round = {clients}\nevaluate_every = {rounds}\n"
        "[client]\nlr = 0.02\nbatch_size = 16\n[execution]\nthreads = 1\n"
    )
    write_tokens(folder / "tokens.json", make_tokens(ids))  # and server-tokens.json
    port = 50000 + os.getpid() % 10000
    started = time.perf_counter()
    server = timed(
        "server", "--config", str(run), "--tokens", str(folder / "server-tokens.json"),
        "--insecure", "--quiet", "--listen", f"127.0.0.1:{port}", "--output", str(folder / "out"),
    )  # fmt: skip
    time.sleep(3)
    workers = [client(run, folder, port, k, c) for k, c in enumerate(ids)]
    _, server_report = server.communicate(timeout=3600)
    client_reports = [w.communicate(timeout=600)[1] for w in workers]
    if server.returncode != 0:
        raise SystemExit(f"server failed:\n{server_report[-3000:]}")
    rounds_done = RunStore(folder / "store.sqlite").reports("out")
    fits = [r for r in rounds_done if r.round < rounds] or rounds_done
    return {
        "tuning": tuning,
        "clients": clients,
        "rounds": rounds,
        "wall_s": time.perf_counter() - started,
        "s_per_round": statistics.median(r.times["total_s"] for r in fits),
        "up_per_client_mb": statistics.median(r.bytes_up / clients for r in fits) / 1e6,
        "down_per_client_mb": statistics.median(r.bytes_down / clients for r in fits) / 1e6,
        "server_peak_mb": peak_mb(server_report),
        "client_peak_mb": max(peak_mb(r) for r in client_reports),
        "central_accuracy": rounds_done[-1].metrics.get("central_accuracy"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuning", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    rows = []
    for tuning in args.tuning:
        with tempfile.TemporaryDirectory() as scratch:
            row = deploy(tuning, args.clients, args.rounds, Path(scratch))
        print(json.dumps(row), flush=True)
        rows.append(row)
    columns = list(rows[0])
    print(" | ".join(columns))
    for row in rows:
        print(
            " | ".join(
                f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c]) for c in columns
            )
        )


if __name__ == "__main__":
    main()
