"""Connected gRPC clients as the buffered loop's ``Fleet`` (``rounds.fleet``).

Each task is one fit request on its client's stream, sent the moment the loop starts it;
it ends when the client's answer arrives, when the client disconnects (``ClientFailure``:
the work is lost, the client gets a new task once it reconnects), or at its deadline
(``task_timeout_s``). Time is wall-clock seconds since the run began, carried over a
resume. Answers come to the fleet's own queue, so the evaluations and secure sums the
loop runs meanwhile over ``GrpcTransport`` never take them.

A restarted server keeps no tasks in flight: the clients' answers to the old server's
tasks name tasks it does not know, and are refused; each client is given a new task.
"""

from __future__ import annotations

import collections
import queue
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedstream.client.base import FitTask
from fedstream.errors import ClientFailure
from fedstream.rounds.fleet import Ended, Event, InFlight, Version
from fedstream.transport.base import Delivery
from fedstream.transport.grpc.codec import fit_config_to_dict
from fedstream.transport.grpc.server import Answer, FedstreamService, fit_delivery
from fedstream.types import ClientUpdate

POLL_S = 0.1  # how often a waiting fleet looks at deadlines and new connections


@dataclass(frozen=True)
class _Out:
    """A task sent and not yet answered."""

    task: FitTask
    started: float
    deadline: float
    bytes_down: int


class GrpcFleet:
    """The clients connected to ``service`` (module docstring). A task unanswered after
    ``task_timeout_s`` fails; with no task out, the fleet waits as long for a client to
    connect before it reports that nothing will happen."""

    def __init__(self, service: FedstreamService, task_timeout_s: float) -> None:
        self.service = service
        self.task_timeout_s = task_timeout_s
        self.inbox: queue.Queue[Answer] = queue.Queue()
        self.out: dict[str, _Out] = {}  # by task id
        self.ended: collections.deque[Ended] = collections.deque()  # ended, not yet reported
        self.per_version: collections.Counter[int] = collections.Counter()
        self.wire: dict[int, bytes] = {}  # each version's params as sent
        self.wanted: set[str] = set()  # idle clients the loop would start once connected
        self.counter = 0
        self.offset = 0.0
        self.began = time.monotonic()

    def now(self) -> float:
        """Seconds since the run began."""
        return self.offset + time.monotonic() - self.began

    def ready(self, idle: Sequence[str], now: float) -> list[str]:
        ready = self.service.connected_among(idle)
        self.wanted = set() if ready else set(idle)
        return ready

    def start(self, task: FitTask, version: Version, now: float) -> None:
        number = task.round
        if number not in self.wire:
            self.wire[number] = version.params.to_bytes()
        wire = self.wire[number]
        started = self.now()
        # the run's seconds at the task's start: a streaming client reads its window then
        header = {"config": fit_config_to_dict(task.config), "data_time": started}
        self.per_version[number] += 1
        sent = self.service.send(task.client_id, "fit", number, header, wire, self.inbox)
        if sent is None:  # it disconnected since ``ready``
            failure = ClientFailure(task.client_id, "train", "not connected")
            self._end(
                _Out(task, started, started, len(wire)), Delivery(task.client_id, failure, 0, 0)
            )
            return
        self.out[sent] = _Out(task, started, started + self.task_timeout_s, len(wire))

    def _end(self, out: _Out, delivery: Delivery[ClientUpdate]) -> None:
        number = out.task.round
        self.per_version[number] -= 1
        if self.per_version[number] == 0:
            del self.per_version[number]
            for old in [n for n in self.wire if n < number and n not in self.per_version]:
                del self.wire[old]
        event = Event(self.now(), self.counter, out.task, True, out.started)
        self.counter += 1
        self.ended.append(Ended(event, (out.task,), (delivery,)))

    def next(self) -> Ended | None:
        idle_since = time.monotonic()
        while not self.ended:
            try:
                answer: Answer | None = self.inbox.get(timeout=POLL_S)
            except queue.Empty:
                answer = None
            if answer is not None:
                out = self.out.pop(answer.task_id, None)
                if out is not None:
                    self._end(out, fit_delivery(answer, out.bytes_down))
                continue
            now = self.now()
            overdue = [task_id for task_id, out in self.out.items() if out.deadline <= now]
            self.service.forget(overdue)
            for task_id in overdue:
                out = self.out.pop(task_id)
                reason = f"no answer within task_timeout={self.task_timeout_s:g} s"
                failure = ClientFailure(out.task.client_id, "train", reason)
                self._end(out, Delivery(out.task.client_id, failure, out.bytes_down, 0))
            if self.ended:
                break
            if self.wanted and self.service.connected_among(list(self.wanted)):
                self.wanted = set()
                event = Event(now, self.counter, None)
                self.counter += 1
                return Ended(event)
            if self.out:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > self.task_timeout_s:
                return None  # no task out and no client to start one for that long
        return self.ended.popleft()

    def outstanding(self, number: int) -> bool:
        return number in self.per_version

    def in_flight(
        self, now: float, outcomes: Mapping[str, ClientUpdate | ClientFailure]
    ) -> InFlight:
        return InFlight(now, self.counter, (), dict(outcomes), {})

    def restore(self, saved: InFlight, versions: Mapping[int, Version]) -> set[str]:
        self.offset, self.began, self.counter = saved.now, time.monotonic(), saved.next_order
        return set()
