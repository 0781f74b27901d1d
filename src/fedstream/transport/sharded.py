"""What the worker-process and Ray transports share: clients split over persistent workers.

A client always belongs to the same worker (a stable hash of its id), so its device-side
state stays in one place. Each call sends every worker its share and streams back what
the workers answer; a worker that cannot answer fails each of its clients instead, so a
round always hears about every client it asked.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fedstream.client.base import FitTask
from fedstream.client.state import ClientState
from fedstream.errors import ClientFailure
from fedstream.params import Params
from fedstream.transport.base import Delivery, Fitted
from fedstream.types import ClientUpdate, EvaluateResult, FitConfig

if TYPE_CHECKING:
    from fedstream.transport.inprocess import InProcessTransport

ArgsFor = Callable[[int], tuple[Any, ...]]
Failed = Callable[[str, str], Any]
# builds a worker's state from (its index, the number of workers): an InProcessTransport
# holding that worker's clients (see ``engine.local_transport``)
Recipe = Callable[[int, int], "InProcessTransport"]


_ALL_CLIENTS = "*all clients*"


def _nothing(client_id: str, why: str) -> None:
    """A command about all clients has no per-client failure to report."""
    return None


def worker_of(client_id: str, workers: int) -> int:
    """The worker that always serves ``client_id``: a stable hash, the same in every run."""
    return zlib.crc32(client_id.encode()) % workers


class ShardedTransport:
    """``fit``, ``evaluate`` and ``exchange`` over ``worker_count`` workers, each owning a
    fixed share of the clients. Subclasses say how the params reach the workers
    (``_broadcast``) and how a command reaches them and answers come back (``_run``).
    A worker runs ``command(*args_for(index))`` on its ``InProcessTransport``-like state:
    ``fit(broadcast, tasks)`` (or ``fit_stacked``), ``evaluate(broadcast, round,
    client_ids, codec, personalize)`` or ``exchange(stage, round, requests)``."""

    @property
    def worker_count(self) -> int:
        raise NotImplementedError

    def _broadcast(self, params: Params) -> Any:
        """What a worker is sent to find ``params`` (shared memory, an object ref)."""
        raise NotImplementedError

    def _run(
        self, command: str, shares: Mapping[int, Sequence[str]], args_for: ArgsFor, failed: Failed
    ) -> Iterator[Any]:
        """Run ``command`` on every worker with a share; yield answers as they come, and
        ``failed(client_id, why)`` for each client of a worker that could not answer."""
        raise NotImplementedError

    def _shares(self, client_ids: Sequence[str]) -> dict[int, list[str]]:
        shares: dict[int, list[str]] = {i: [] for i in range(self.worker_count)}
        for client_id in client_ids:
            shares[worker_of(client_id, self.worker_count)].append(client_id)
        return shares

    def fit(self, params: Params, tasks: Sequence[FitTask]) -> Iterator[Delivery[ClientUpdate]]:
        return self._fit("fit", params, tasks)

    def fit_stacked(self, params: Params, tasks: Sequence[FitTask]) -> Iterator[Fitted]:
        """``fit``, each worker handing over its plain cohorts as blocks
        (``InProcessTransport.fit_stacked``): one message a cohort, not one a client."""
        return self._fit("fit_stacked", params, tasks)

    def _fit(self, command: str, params: Params, tasks: Sequence[FitTask]) -> Iterator[Any]:
        if not tasks:
            return
        where, size = self._broadcast(params), params.wire_size()
        by_client = {t.client_id: t for t in tasks}
        shares = self._shares([t.client_id for t in tasks])
        yield from self._run(
            command,
            shares,
            lambda i: (where, [by_client[c] for c in shares[i]]),
            lambda client_id, why: Delivery(
                client_id, ClientFailure(client_id, "train", why), size, 0
            ),
        )

    def evaluate(
        self,
        params: Params,
        round_number: int,
        client_ids: Sequence[str],
        broadcast: str = "none",
        personalize: FitConfig | None = None,
    ) -> Iterator[Delivery[EvaluateResult]]:
        if not client_ids:
            return
        where, size = self._broadcast(params), params.wire_size()
        shares = self._shares(client_ids)
        yield from self._run(
            "evaluate",
            shares,
            lambda i: (where, round_number, shares[i], broadcast, personalize),
            lambda client_id, why: Delivery(
                client_id, ClientFailure(client_id, "evaluate", why), size, 0
            ),
        )

    def _everyone(self) -> dict[int, list[str]]:
        """A share for every worker, for commands about all its clients."""
        return {i: [_ALL_CLIENTS] for i in range(self.worker_count)}

    def client_states(self) -> dict[str, ClientState]:
        """Every worker's clients' durable states (a worker that cannot answer loses its
        clients' states, as a device that dies loses its disk)."""
        states: dict[str, ClientState] = {}
        for item in self._run("client_states", self._everyone(), lambda i: (), _nothing):
            if item is not None:
                client_id, state = item
                states[client_id] = state
        return states

    def restore_client_states(self, states: Mapping[str, ClientState]) -> None:
        """Give every worker the saved states; each keeps its own clients'."""
        for _ in self._run(
            "restore_client_states", self._everyone(), lambda i: (states,), _nothing
        ):
            pass

    def exchange(
        self, stage: str, round_number: int, requests: Mapping[str, bytes]
    ) -> Iterator[tuple[str, bytes | ClientFailure]]:
        shares = self._shares(list(requests))
        yield from self._run(
            "exchange",
            shares,
            lambda i: (stage, round_number, {c: requests[c] for c in shares[i]}),
            lambda client_id, why: (client_id, ClientFailure(client_id, stage, why)),
        )
