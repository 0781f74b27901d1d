"""Run a simulation's clients on all cores: persistent worker processes, shared-memory
broadcast, results streamed back as each client finishes.

Each worker is started once (``spawn``) and builds its own ``InProcessTransport`` (its
clients' data and the model) from a picklable recipe, once, not every round. A client
always goes to the same worker (by a hash of its id), so its device-side state (the
compression residual, SecAgg+ keys, an HE key pair) stays where it was made, as it would
on a device. Each round the parent writes the broadcast's wire bytes once into a shared
memory segment that every worker reads, instead of sending a copy down every pipe; each
worker trains its share of the round's tasks (as vectorised cohorts when the trainer
allows) and streams the deliveries back in small batches as it finishes them. The round
loop sums updates in task order (``rounds.InTaskOrder``), so results do not depend on
which worker finished first.

A worker that dies fails only its own clients' outstanding tasks, with the exit code in
the failure; a new worker replaces it before the next call.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.shared_memory import SharedMemory
from typing import Any

from fedstream.errors import ConfigError
from fedstream.params import Params
from fedstream.transport.base import Delivery, StackedDelivery
from fedstream.transport.inprocess import describe_exception
from fedstream.transport.sharded import ArgsFor, Failed, Recipe, ShardedTransport

log = logging.getLogger("fedstream.processes")

STARTUP_TIMEOUT_S = 300.0
STREAM_BATCH = 32


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class _Broadcast:
    """Where a worker finds the params: ``size`` bytes at the start of segment ``name``."""

    name: str
    size: int


def _attach(segments: dict[str, SharedMemory], name: str) -> SharedMemory:
    """Open the parent's segment once per worker. Spawned workers share the parent's
    resource tracker, so attaching registers nothing new, and only the parent unlinks."""
    segment = segments.get(name)
    if segment is None:
        segment = SharedMemory(name=name)
        for old in segments.values():
            old.close()
        segments.clear()
        segments[name] = segment
    return segment


def _read(segments: dict[str, SharedMemory], broadcast: _Broadcast) -> Params:
    """The broadcast params, copied out of shared memory (one copy per worker per call, so
    the parent may overwrite the segment for the next call)."""
    segment = _attach(segments, broadcast.name)
    buffer = segment.buf
    assert buffer is not None
    return Params.from_bytes(bytes(buffer[: broadcast.size]))


def _stream(connection: Connection, items: Iterator[Any]) -> None:
    """Send ``items`` back in batches of up to ``STREAM_BATCH``: one pipe message per
    client costs more than the training of a small model."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == STREAM_BATCH:
            connection.send(("items", batch))
            batch = []
    if batch:
        connection.send(("items", batch))


def _serve(connection: Connection, recipe: Recipe, index: int, count: int, threads: int) -> None:
    """A worker's life: build the transport, then answer commands until told to stop."""
    import torch

    torch.set_num_threads(threads)
    try:
        transport = recipe(index, count)
    except Exception as exc:
        connection.send(("error", describe_exception(exc)))
        return
    connection.send(("ready", os.getpid()))
    segments: dict[str, SharedMemory] = {}
    while True:
        try:
            command, *args = connection.recv()
        except EOFError:  # the parent is gone
            break
        if command == "stop":
            break
        try:
            if command in ("fit", "fit_stacked"):
                broadcast, tasks = args
                fit = transport.fit if command == "fit" else transport.fit_stacked
                _stream(connection, fit(_read(segments, broadcast), tasks))
            elif command == "evaluate":
                broadcast, round_number, client_ids, codec, personalize = args
                params = _read(segments, broadcast)
                _stream(
                    connection,
                    transport.evaluate(params, round_number, client_ids, codec, personalize),
                )
            elif command == "exchange":
                stage, round_number, requests = args
                _stream(connection, transport.exchange(stage, round_number, requests))
            elif command == "client_states":
                _stream(connection, iter(transport.client_states().items()))
            elif command == "restore_client_states":
                transport.restore_client_states(*args)
            connection.send(("done", None))
        except Exception as exc:  # reported as this worker's clients failing, then go on
            connection.send(("failed", describe_exception(exc)))
    for segment in segments.values():
        segment.close()


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, index: int, count: int, recipe: Recipe, threads: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.index = index
        self.connection, child = context.Pipe(duplex=True)
        self.process: BaseProcess = context.Process(
            target=_serve,
            args=(child, recipe, index, count, threads),
            name=f"fedstream-worker-{index}",
            daemon=True,
        )
        self.process.start()
        child.close()

    def wait_ready(self) -> None:
        if not self.connection.poll(STARTUP_TIMEOUT_S):
            raise RuntimeError(f"worker {self.index} did not start in {STARTUP_TIMEOUT_S:.0f} s")
        try:
            kind, detail = self.connection.recv()
        except EOFError:
            raise RuntimeError(
                f"worker {self.index} exited while starting (code {self.process.exitcode})"
            ) from None
        if kind != "ready":
            raise ConfigError("executor", "processes", f"workers that can start: {detail}")

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # a dead worker's pipe is already broken
            self.connection.send(("stop",))
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


class ProcessTransport(ShardedTransport):
    """A ``Transport`` over ``workers`` persistent processes on this machine.

    ``recipe(index, workers)`` is a picklable callable that builds, inside worker
    ``index``, the ``InProcessTransport`` holding that worker's clients and the trainer
    (the simulation passes ``engine.local_transport``, which rebuilds both from the run's
    config and seed). Close it (or use ``with``) to stop the workers and free the shared
    memory.
    """

    def __init__(self, recipe: Recipe, workers: int, threads: int = 1) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigError("workers", workers, "an integer >= 1")
        self._recipe = recipe
        self._threads = threads
        self._workers = [_Worker(i, workers, recipe, threads) for i in range(workers)]
        self._segment: SharedMemory | None = None
        try:
            for worker in self._workers:
                worker.wait_ready()
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (for tests and resource accounting)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers = []
        if self._segment is not None:
            self._segment.close()
            self._segment.unlink()
            self._segment = None

    def __enter__(self) -> ProcessTransport:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _replace_dead(self) -> None:
        for index, worker in enumerate(self._workers):
            if not worker.alive:
                log.warning(
                    "worker %d exited (code %s); starting a new one",
                    index,
                    worker.process.exitcode,
                )
                worker.connection.close()
                self._workers[index] = _Worker(
                    index, len(self._workers), self._recipe, self._threads
                )
                self._workers[index].wait_ready()

    @property
    def worker_count(self) -> int:
        return len(self._workers)

    def _broadcast(self, params: Params) -> _Broadcast:
        """Write the params' wire bytes into the shared segment (grown when too small)."""
        chunks = params.encode_chunks()
        size = sum(len(memoryview(c)) for c in chunks)
        if self._segment is None or self._segment.size < size:
            if self._segment is not None:
                self._segment.close()
                self._segment.unlink()
            self._segment = SharedMemory(create=True, size=max(size, 1))
        buffer = self._segment.buf
        assert buffer is not None
        offset = 0
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            buffer[offset : offset + len(view)] = view
            offset += len(view)
        return _Broadcast(self._segment.name, size)

    def _run(
        self,
        command: str,
        shares: Mapping[int, Sequence[str]],
        args_for: ArgsFor,
        failed: Failed,
    ) -> Iterator[Any]:
        """Send ``command`` to every worker with a share, yield items as they arrive, and
        for a worker that dies or fails yield ``failed(client_id, why)`` for each of its
        clients that has not been answered."""
        self._replace_dead()
        pending: dict[int, set[str]] = {}
        for index, share in shares.items():
            if not share:
                continue
            self._workers[index].connection.send((command, *args_for(index)))
            pending[index] = set(share)
        while pending:
            by_connection = {self._workers[i].connection: i for i in pending}
            by_sentinel = {self._workers[i].process.sentinel: i for i in pending}
            for handle in wait([*by_connection, *by_sentinel]):
                if isinstance(handle, Connection):
                    index = by_connection[handle]
                else:
                    index = by_sentinel[handle]  # type: ignore[index]
                if index not in pending:  # settled earlier in this batch
                    continue
                worker = self._workers[index]
                if not isinstance(handle, Connection):  # the worker died
                    while worker.connection.poll():  # what it sent before it died
                        try:
                            kind, item = worker.connection.recv()
                        except (EOFError, OSError):
                            break
                        if kind == "items":
                            for one in item:
                                pending[index].difference_update(_clients_of(one))
                            yield from item
                    worker.process.join(timeout=5)  # reap it, so its exit code is known
                    why = f"worker process {index} exited (code {worker.process.exitcode})"
                    for client_id in sorted(pending.pop(index)):
                        yield failed(client_id, why)
                    continue
                try:
                    kind, item = handle.recv()
                except (EOFError, OSError):
                    continue  # its sentinel reports the exit
                if kind == "items":
                    for one in item:
                        pending[index].difference_update(_clients_of(one))
                    yield from item
                elif kind == "done":
                    for client_id in sorted(pending.pop(index)):
                        yield failed(client_id, "no answer from its worker")
                else:  # "failed": the worker survived but the command raised
                    for client_id in sorted(pending.pop(index)):
                        yield failed(client_id, item)


def _clients_of(item: Any) -> Sequence[str]:
    """The clients an item streamed back answers for (a delivery, a block of them, or an
    exchange pair)."""
    if isinstance(item, Delivery):
        return (item.client_id,)
    if isinstance(item, StackedDelivery):
        return item.block.client_ids
    client_id: str = item[0]
    return (client_id,)
