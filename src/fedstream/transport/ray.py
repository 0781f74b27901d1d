"""Run a simulation's clients on a Ray cluster: one persistent actor per worker.

The same design as ``ProcessTransport``, for users who outgrow one machine. Each actor
builds its ``InProcessTransport`` once from the picklable recipe (data and model stay in
the actor across rounds), a client always goes to the same actor (so its device-side
state stays there), and the broadcast is put in Ray's object store once per call, which
actors on the same node read from shared memory. Each actor answers with its share of
the round as one list; the round loop receives the actors' lists as they finish and sums
in task order, so the result does not depend on which actor was first.

``address=None`` starts a local Ray (and stops it on ``close``); otherwise it connects
to a running cluster, whose nodes must have the same fedstream, torch and data installed.
An actor that dies fails its clients' outstanding tasks, and is replaced before the next
call. Ray is an optional dependency: ``pip install "fedstream[ray]"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from fedstream.client.base import FitTask
from fedstream.client.state import ClientState
from fedstream.errors import ClientFailure, ConfigError
from fedstream.params import Params
from fedstream.transport.base import Delivery, Fitted
from fedstream.transport.sharded import ArgsFor, Failed, Recipe, ShardedTransport
from fedstream.types import ClientUpdate, EvaluateResult, FitConfig

log = logging.getLogger("fedstream.ray")


class ClientWorker:
    """The actor: one ``InProcessTransport`` kept for the whole run."""

    def __init__(self, recipe: Recipe, index: int, count: int, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)
        self.transport = recipe(index, count)

    def fit(self, wire: np.ndarray, tasks: Sequence[FitTask]) -> list[Delivery[ClientUpdate]]:
        return list(self.transport.fit(Params.from_bytes(wire.data), tasks))

    def fit_stacked(self, wire: np.ndarray, tasks: Sequence[FitTask]) -> list[Fitted]:
        return list(self.transport.fit_stacked(Params.from_bytes(wire.data), tasks))

    def evaluate(
        self,
        wire: np.ndarray,
        round_number: int,
        client_ids: Sequence[str],
        broadcast: str,
        personalize: FitConfig | None,
    ) -> list[Delivery[EvaluateResult]]:
        params = Params.from_bytes(wire.data)
        return list(
            self.transport.evaluate(params, round_number, client_ids, broadcast, personalize)
        )

    def exchange(
        self,
        stage: str,
        round_number: int,
        requests: Mapping[str, bytes],
    ) -> list[tuple[str, bytes | ClientFailure]]:
        return list(self.transport.exchange(stage, round_number, requests))

    def client_states(self) -> list[tuple[str, ClientState]]:
        return list(self.transport.client_states().items())

    def restore_client_states(self, states: Mapping[str, ClientState]) -> list[None]:
        self.transport.restore_client_states(states)
        return []

    def pid(self) -> int:
        return os.getpid()


class RayTransport(ShardedTransport):
    """A ``Transport`` over ``workers`` Ray actors (one CPU each)."""

    def __init__(
        self, recipe: Recipe, workers: int, threads: int = 1, address: str | None = None
    ) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigError("workers", workers, "an integer >= 1")
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "executor", "ray", 'Ray installed: pip install "fedstream[ray]"'
            ) from None
        self._ray = ray
        self._started = False
        # keep Ray's current handling of accelerator variables without its warning
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "include_dashboard": False,
                "logging_level": logging.WARNING,
                "log_to_driver": False,
            }
            if address is None:  # a Ray of our own, for this machine only
                options["num_cpus"] = workers
                options["_node_ip_address"] = "127.0.0.1"
            ray.init(address=address, **options)
            self._started = True
        self._actor_class = ray.remote(num_cpus=1)(ClientWorker)
        self._recipe = recipe
        self._threads = threads
        self._count = workers
        self._actors = [self._start(i) for i in range(workers)]
        try:  # the first call on each actor finishes its construction (data, model)
            ray.get([a.pid.remote() for a in self._actors])
        except Exception:
            self.close()
            raise

    def _start(self, index: int) -> Any:
        return self._actor_class.remote(self._recipe, index, self._count, self._threads)

    @property
    def pids(self) -> list[int]:
        pids: list[int] = self._ray.get([a.pid.remote() for a in self._actors])
        return pids

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        self._actors = []
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False

    def __enter__(self) -> RayTransport:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def worker_count(self) -> int:
        return len(self._actors)

    def _broadcast(self, params: Params) -> Any:
        """The params' wire bytes in the object store (read from shared memory on a node)."""
        return self._ray.put(np.frombuffer(params.to_bytes(), dtype=np.uint8))

    def _run(
        self, command: str, shares: Mapping[int, Sequence[str]], args_for: ArgsFor, failed: Failed
    ) -> Iterator[Any]:
        """Call every actor with a share, then yield each actor's answers as it finishes;
        an actor that died fails its share and is replaced."""
        ray = self._ray
        waiting = {
            getattr(self._actors[i], command).remote(*args_for(i)): i
            for i, share in shares.items()
            if share
        }
        while waiting:
            done, _ = ray.wait(list(waiting), num_returns=1)
            index = waiting.pop(done[0])
            try:
                answers = ray.get(done[0])
            except ray.exceptions.RayError as exc:
                why = f"Ray actor {index} failed: {type(exc).__name__}: {exc}".splitlines()[0]
                log.warning("%s; starting a new one", why)
                self._actors[index] = self._start(index)
                for client_id in shares[index]:
                    yield failed(client_id, why)
                continue
            yield from answers
