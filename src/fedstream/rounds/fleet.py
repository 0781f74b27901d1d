"""The clients as the buffered loop reaches them (``rounds.buffered``): a ``Fleet``.

The buffered loop decides who trains and when the server steps; a fleet says which of
the idle clients can take a task now, starts tasks, and reports what ends next, in the
order it ends. Two fleets stand behind the seam:

- ``SimulatedFleet``: devices on a ``Clock`` (simulated seconds). Events come off a heap
  in simulated-time order, so a run is reproducible and as fast as the machine. Training
  is lazy: the tasks started from one model version train together, as one cohort, when
  the first of them ends (their results cannot depend on anything later), so the
  vectorised trainer keeps its speed.
- ``transport.grpc.fleet.GrpcFleet``: real clients in other processes, in wall-clock
  seconds; each task is a request on its client's stream and ends when its answer, its
  client's disconnection, or its deadline comes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from fedstream.client.base import FitTask
from fedstream.compression.codecs import Compression
from fedstream.errors import ClientFailure
from fedstream.params import Params
from fedstream.transport.base import Delivery, Transport
from fedstream.types import ClientUpdate, FitConfig


class Clock(Protocol):
    """When devices are online and how long their tasks take, in (simulated) seconds."""

    def next_online(self, client_id: str, now: float) -> float:
        """The earliest time >= ``now`` the device can take a task (``inf``: never)."""
        ...

    def task_end(self, client_id: str, epochs: int, start: float) -> tuple[float, bool]:
        """When a task started at ``start`` ends, and whether it completed (``False``:
        the device went offline first, at that time)."""
        ...


@dataclass(frozen=True, order=True)
class Event:
    """A task ending (completed, or lost when its device went offline), or a wake-up to
    start tasks once a device can take one (``task`` is ``None``), in time order."""

    time: float
    order: int
    task: FitTask | None = field(compare=False)
    completed: bool = field(compare=False, default=True)
    started: float = field(compare=False, default=0.0)


@dataclass(frozen=True)
class Version:
    """One global model version as the clients get it: the params sent, the task config,
    the layout and codec its updates are decoded and checked with."""

    params: Params
    fit: FitConfig
    like: Params
    codec: Compression | None
    mask: npt.NDArray[np.bool_] | None


@dataclass(frozen=True)
class InFlight:
    """The buffered loop's work in progress after a server step, kept in
    ``ServerState.in_flight`` so a checkpoint holds it and a resumed run goes on: the time
    ``now``, the next event number, the pending ``events``, the outcomes of tasks trained
    but not yet ended (``outcomes``), and the model versions (params sent, task config)
    that tasks not yet trained started from (``versions``). A task in ``events`` that
    completes and has no outcome is one still to train. A live fleet keeps only the time:
    its tasks in flight at a restart are lost."""

    now: float
    next_order: int
    events: tuple[Event, ...]
    outcomes: Mapping[str, ClientUpdate | ClientFailure]
    versions: Mapping[int, tuple[Params, FitConfig]]


@dataclass(frozen=True)
class Ended:
    """What a fleet reports next: ``event`` (a task's end, or a wake-up), and the answers
    that came with it: ``deliveries`` for ``trained``, tasks all started from one model
    version (none when the answers came earlier, or for a wake-up or a lost task)."""

    event: Event
    trained: tuple[FitTask, ...] = ()
    deliveries: Iterable[Delivery[ClientUpdate]] = ()


class Fleet(Protocol):
    """The clients the buffered loop reaches, in its time (seconds)."""

    def ready(self, idle: Sequence[str], now: float) -> list[str]:
        """Those of the ``idle`` clients that can take a task at ``now``, in the order
        given. When there are none, the next event is a wake-up once one can."""
        ...

    def start(self, task: FitTask, version: Version, now: float) -> None:
        """Send ``task`` from ``version`` to its client."""
        ...

    def next(self) -> Ended | None:
        """The next task to end or wake-up, in time order (``None``: nothing will)."""
        ...

    def outstanding(self, number: int) -> bool:
        """Whether a task started from model version ``number`` has not brought its
        answer yet (its version must stay known to check it)."""
        ...

    def in_flight(
        self, now: float, outcomes: Mapping[str, ClientUpdate | ClientFailure]
    ) -> InFlight:
        """The work in progress, with the loop's ``outcomes``, for a checkpoint."""
        ...

    def restore(self, saved: InFlight, versions: Mapping[int, Version]) -> set[str]:
        """Go on from a checkpoint's ``saved`` work (its ``versions`` rebuilt): the clients
        that still have a task in flight."""
        ...


@runtime_checkable
class LiveTransport(Protocol):
    """A transport that reaches real clients one task at a time (gRPC's): it makes the
    ``Fleet`` an asynchronous deployment's buffered loop drives."""

    def fleet(self) -> Fleet:
        """The fleet of this transport's clients, its clock started now."""
        ...


class SimulatedFleet:
    """Devices on ``clock`` whose tasks ``transport`` trains (module docstring)."""

    def __init__(self, transport: Transport, clock: Clock) -> None:
        self.transport = transport
        self.clock = clock
        self.events: list[Event] = []  # a heap
        self.counter = 0  # the next event's number
        self.waking = False  # a wake-up is in the heap
        self.waiting: dict[int, list[FitTask]] = {}  # started, not trained yet, by version
        self.versions: dict[int, Version] = {}  # those the waiting tasks started from

    def _push(self, time: float, task: FitTask | None, completed: bool, started: float) -> None:
        heapq.heappush(self.events, Event(time, self.counter, task, completed, started))
        self.counter += 1

    def ready(self, idle: Sequence[str], now: float) -> list[str]:
        online = [c for c in idle if self.clock.next_online(c, now) <= now]
        if not online and idle and not self.waking:
            wake = min(self.clock.next_online(c, now) for c in idle)
            if math.isfinite(wake):
                self.waking = True
                self._push(wake, None, True, 0.0)
        return online

    def start(self, task: FitTask, version: Version, now: float) -> None:
        end, completed = self.clock.task_end(task.client_id, task.config.local_epochs, now)
        if completed:  # a task lost with its device is never trained
            self.waiting.setdefault(task.round, []).append(task)
            self.versions[task.round] = version
        self._push(end, task, completed, now)

    def next(self) -> Ended | None:
        if not self.events:
            return None
        event = heapq.heappop(self.events)
        task = event.task
        if task is None:
            self.waking = False
            return Ended(event)
        untrained = self.waiting.get(task.round, [])
        if not event.completed or all(t.client_id != task.client_id for t in untrained):
            return Ended(event)
        tasks = tuple(self.waiting.pop(task.round))
        version = self.versions.pop(task.round)
        return Ended(event, tasks, self.transport.fit(version.params, tasks))

    def outstanding(self, number: int) -> bool:
        return number in self.waiting

    def in_flight(
        self, now: float, outcomes: Mapping[str, ClientUpdate | ClientFailure]
    ) -> InFlight:
        versions = {n: (self.versions[n].params, self.versions[n].fit) for n in self.waiting}
        return InFlight(now, self.counter, tuple(self.events), dict(outcomes), versions)

    def restore(self, saved: InFlight, versions: Mapping[int, Version]) -> set[str]:
        self.counter = saved.next_order
        self.events = sorted(saved.events)  # a sorted list is a heap
        busy: set[str] = set()
        for event in sorted(self.events, key=lambda e: e.order):  # the order tasks started in
            if event.task is None:
                self.waking = True
                continue
            busy.add(event.task.client_id)
            if event.completed and event.task.client_id not in saved.outcomes:
                self.waiting.setdefault(event.task.round, []).append(event.task)
                self.versions[event.task.round] = versions[event.task.round]
        return busy


def lost_task(event: Event) -> ClientFailure:
    """The failure of a task whose device went offline before it ended."""
    assert event.task is not None
    return ClientFailure(
        event.task.client_id,
        "train",
        f"went offline {event.time - event.started:.4g} s into its task; the work is lost",
    )
