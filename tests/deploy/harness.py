"""Real deployments for tests: run files, tokens, and server and client processes (the
fedstream CLI, or a test's own module playing a client) on 127.0.0.1."""

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from fedstream.deploy import make_tokens, write_identities, write_tokens
from fedstream.simulation import SimulationConfig
from fedstream.simulation.engine import build_dataset, resolve_app
from fedstream.store import latest_checkpoint, load_checkpoint
from fedstream.transport.grpc import fedstream_pb2 as pb
from fedstream.transport.grpc import fedstream_pb2_grpc as pb_grpc
from fedstream.transport.grpc.framing import CHUNK_BYTES
from fedstream.transport.grpc.server import PROTOCOL, FedstreamService, start_server
from fedstream.types import RoundReport, ServerState
from tests.settings import make_config, toml_text

RUN = {
    "num_clients": 5, "clients_per_round": 5, "partition": "iid", "local_epochs": 1,
    "trainer": "sequential", "rounds": 4, "evaluate_every": 2,
}  # fmt: skip


def write_run(folder: Path, **changes: Any) -> tuple[Path, Path, SimulationConfig]:
    settings = {**RUN, **changes}
    config = make_config(**settings)
    toml = folder / "run.toml"
    toml.write_text(toml_text(**settings))
    tokens = folder / "tokens.json"
    write_tokens(tokens, make_tokens(client_ids(config)))  # what `fedstream tokens` writes
    write_identities(folder, client_ids(config))
    return toml, tokens, config


def free_port() -> int:
    """A port nothing listens on at this moment, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[Any], **get: Any) -> None:
    """Wait (up to 60 s) until the HTTP server that ``process`` started answers
    ``/healthz``; ``get`` passes on to ``httpx.get`` (``verify=`` for TLS)."""
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/healthz", **get)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)


class Process:
    """A fedstream CLI process whose stderr is drained in the background."""

    def __init__(self, *args: str, module: str = "fedstream.cli") -> None:
        command = [sys.executable, "-m", module, *args]
        self.popen = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self.lines.append(line)

    def wait_for_line(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            assert self.popen.poll() is None, "".join(self.lines)
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout} s: {''.join(self.lines)}")

    def wait(self, timeout: float = 120) -> int:
        return self.popen.wait(timeout=timeout)

    def stdout(self) -> str:
        """All it printed to stdout (once it has exited)."""
        assert self.popen.stdout is not None
        return self.popen.stdout.read()

    def kill(self) -> None:
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def start_server_process(
    toml: Path, tokens: Path, out: Path, *extra: str, port: int = 0
) -> tuple[Process, int]:
    """The server process, given only the salted hashes of the clients' tokens."""
    hashed = tokens.parent / "server-tokens.json"
    server = Process(
        "server", "--config", str(toml), "--tokens", str(hashed), "--insecure", "--quiet",
        "--listen", f"127.0.0.1:{port}", "--output", str(out), *extra,
    )  # fmt: skip
    line = server.wait_for_line("listening on port")
    return server, int(line.split("port")[1].split(",")[0])


def restart_server(
    server: Process, tokens: Path, port: int, out: Path, clients: Mapping[str, Process]
) -> tuple[Path, ServerState]:
    """Kill ``server`` and start it again with ``--resume`` on the same port, where its
    clients are retrying with backoff; wait until the run and every client end well.
    The checkpoint the server was killed at: its folder, and its state (read before the
    restarted server may prune it)."""
    server.kill()
    killed_at = latest_checkpoint(out / "checkpoints")
    assert killed_at is not None
    state, _ = load_checkpoint(killed_at)
    restarted = Process(
        "server", "--tokens", str(tokens), "--insecure", "--quiet",
        "--listen", f"127.0.0.1:{port}", "--resume", str(out),
    )  # fmt: skip
    assert restarted.wait(timeout=180) == 0, "".join(restarted.lines)
    for client in clients.values():
        assert client.wait() == 0, "".join(client.lines)
    return killed_at, state


def start_client(toml: Path, tokens: Path, port: int, client_id: str, *extra: str) -> Process:
    """A client process, keeping its state beside the run file (``toml``'s folder)."""
    return Process(
        "client", "--config", str(toml), "--server", f"127.0.0.1:{port}", "--id", client_id,
        "--token-file", str(tokens), "--insecure",
        "--state-dir", str(toml.parent / "client-state" / client_id),
        "--identity", str(tokens.parent / "identities.json"), *extra,
    )  # fmt: skip


def start_clients(toml: Path, tokens: Path, port: int, ids: Iterable[str]) -> dict[str, Process]:
    return {c: start_client(toml, tokens, port, c) for c in ids}


@contextlib.contextmanager
def deployment(
    toml: Path, tokens: Path, ids: Sequence[str], run_id: str
) -> Iterator[FedstreamService]:
    """An in-test gRPC server with every client as a process, all connected; torn down
    (run finished, server stopped, clients exited) however the test leaves."""
    service = FedstreamService(json.loads(tokens.read_text()), run_id=run_id)
    server, port = start_server(service, "127.0.0.1:0", None)
    clients = start_clients(toml, tokens, port, ids)
    try:
        service.wait_for(len(ids), 60)
        yield service
    finally:
        service.finish()
        server.stop(grace=1.0).wait()
        for client in clients.values():
            client.wait()


def client_ids(config: SimulationConfig) -> list[str]:
    app = resolve_app(config, None)
    return app.ids() if app is not None else sorted(build_dataset(config).clients)


def deploy_run(
    tmp_path: Path,
    toml: Path,
    tokens: Path,
    config: SimulationConfig,
    *server_flags: str,
    clients_said: str = "",
) -> tuple[ServerState, RoundReport | None]:
    """A whole deployment: the server (with ``server_flags``) and every configured client
    as processes, run to the end, each client's output holding ``clients_said``; the
    final checkpoint's state and report."""
    server, port = start_server_process(toml, tokens, tmp_path / "run", *server_flags)
    clients = start_clients(toml, tokens, port, client_ids(config))
    assert server.wait() == 0, "".join(server.lines)
    for client in clients.values():
        assert client.wait() == 0, "".join(client.lines)
        said = client.stdout()
        assert clients_said in said, said
    # --insecure is said loudly on both sides
    for process in (server, *clients.values()):
        assert "runs WITHOUT TLS (--insecure)" in "".join(process.lines)
    last = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert last is not None, "the run left no checkpoint"
    return load_checkpoint(last)


class RawSession:
    """A Session stream driven by hand: the test sends each message a client would (or an
    attacker would) and reads what the server sends back."""

    def __init__(self, port: int, *first: pb.ClientMessage, timeout: float = 30) -> None:
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * CHUNK_BYTES)]
        )
        self.outbound: queue.Queue[pb.ClientMessage | None] = queue.Queue()
        self.received: queue.Queue[pb.ServerMessage] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        for message in first:
            self.outbound.put(message)
        stub = pb_grpc.FedstreamStub(self.channel)  # type: ignore[no-untyped-call]
        stream = stub.Session(iter(self.outbound.get, None), timeout=timeout)
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        try:
            for message in stream:
                self.received.put(message)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.ended.set()

    def send(self, *messages: pb.ClientMessage) -> None:
        for message in messages:
            self.outbound.put(message)

    def next(self, kind: str, timeout: float = 10) -> pb.ServerMessage:
        """The next message of ``kind`` from the server (others are skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = self.received.get(timeout=min(left, 0.1))
            except queue.Empty:
                if self.ended.is_set() and self.received.empty():
                    break
                continue
            if message.WhichOneof("body") == kind:
                return message
        raise AssertionError(f"no {kind!r} from the server within {timeout} s ({self.error})")

    def close(self) -> None:
        self.outbound.put(None)
        self.channel.close()


def hello(client_id: str, token: str) -> pb.ClientMessage:
    return pb.ClientMessage(hello=pb.Hello(client_id=client_id, token=token, protocol=PROTOCOL))
