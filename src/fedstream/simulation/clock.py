"""Simulated time for experiments: how long each client's device takes over a task, and
when it is online.

A real federation's clients differ in speed by orders of magnitude (phones, sensors,
hospital servers), come and go (a phone trains only while charging on Wi-Fi), and a
synchronous round waits for its slowest client. The simulation runs as fast as the machine
can; the clock says how long the same work would have taken on the devices, so
synchronous and asynchronous runs are compared at equal simulated time (``sim_time_s`` in
every round's report), reproducibly, whatever the durations.

**Speed.** A task of ``E`` local epochs on ``n`` training examples takes
``E · n · t_k + latency`` seconds on client ``k``, with ``t_k`` its compute time per
example, drawn once per client (from the run's seed, in client-id order) from one of:

- ``constant``: ``t_k = mean`` for every client (tasks still differ by data size);
- ``lognormal``: ``t_k = mean · exp(σ·Z − σ²/2)``, ``Z ~ N(0, 1)``, whose mean is
  ``mean``: heavy-tailed for σ ≥ 1 (σ = 1: the slowest of 100 clients about 10× the
  median);
- ``pareto``: ``t_k = mean · (α − 1)/α · U^(−1/α)``, ``U ~ U(0, 1]``, a Pareto with shape α
  and mean ``mean`` (α > 1; α ≤ 2 has infinite variance).

**Availability.** Without it every device is always online. With mean online and offline
periods (``Availability.exponential``) each device alternates between the two with
exponentially distributed durations, starting in its stationary state (online with
probability on / (on + off)), each from its own seeded stream. A trace file gives each
device's online intervals instead (``Availability.from_trace``). A device is given a task
only while online, and a task still running when its device goes offline is lost.

A synchronous round lasts until its last sampled task has finished or been lost.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedstream import checks
from fedstream.client.base import FitTask
from fedstream.errors import ConfigError

SPEEDS = ("none", "constant", "lognormal", "pareto")
CLOCK_STREAM = 0xC10C
"""Mixed into the run's seed for the devices' speeds and availability, streams of their own."""
_PERIODS = 64  # on/off periods drawn at a time, per device


class Availability:
    """When each device is online: sorted, disjoint (start, end) intervals per client,
    generated lazily from each device's own stream (exponential periods) or read from a
    trace (module docstring). Deterministic whatever order it is asked in."""

    def __init__(
        self,
        intervals: Mapping[str, Sequence[tuple[float, float]]] | None = None,
        periods: tuple[float, float] | None = None,
        seed: int = 0,
        client_ids: Sequence[str] = (),
    ) -> None:
        self._fixed = {c: [tuple(map(float, i)) for i in v] for c, v in (intervals or {}).items()}
        self._periods = periods
        self._index = {c: k for k, c in enumerate(sorted(client_ids))}
        self._seed = seed
        self._drawn: dict[str, tuple[list[float], list[float], np.random.Generator]] = {}

    @classmethod
    def exponential(
        cls, client_ids: Sequence[str], online_s: float, offline_s: float, seed: int
    ) -> Availability:
        """Alternating online and offline periods with these means (s)."""
        checks.positive("clock.online_s", online_s)
        checks.positive("clock.offline_s", offline_s)
        return cls(periods=(online_s, offline_s), seed=seed, client_ids=client_ids)

    @classmethod
    def from_trace(cls, intervals: Mapping[str, Any], client_ids: Sequence[str]) -> Availability:
        """Each client's online intervals [[start, end], …] (s), sorted and disjoint; a
        client the trace does not name is refused."""
        missing = sorted(set(client_ids) - set(intervals))
        if missing:
            raise ConfigError("clock.trace", missing[:3], "online intervals for every client")
        checked: dict[str, list[tuple[float, float]]] = {}
        for client, spans in intervals.items():
            previous = -math.inf
            checked[client] = []
            for span in spans:
                ok = isinstance(span, list | tuple) and len(span) == 2
                start, end = (float(span[0]), float(span[1])) if ok else (math.nan, math.nan)
                if not (math.isfinite(start) and start >= max(previous, 0) and end > start):
                    raise ConfigError(
                        f"clock.trace[{client!r}]",
                        span,
                        "sorted, disjoint [start, end] intervals in seconds, start >= 0",
                    )
                checked[client].append((start, end))
                previous = end
        return cls(intervals=checked)

    def _intervals(self, client_id: str, until: float) -> tuple[list[float], list[float]]:
        """The client's interval starts and ends, drawn at least past ``until``."""
        if client_id in self._fixed:
            spans = self._fixed[client_id]
            return [s for s, _ in spans], [e for _, e in spans]
        assert self._periods is not None
        online, offline = self._periods
        if client_id not in self._drawn:
            rng = np.random.default_rng([self._seed, CLOCK_STREAM, 1, self._index[client_id]])
            starts_online = rng.random() < online / (online + offline)
            first = 0.0 if starts_online else rng.exponential(offline)
            self._drawn[client_id] = ([first], [first + rng.exponential(online)], rng)
        starts, ends, rng = self._drawn[client_id]
        while ends[-1] <= until:
            gaps = rng.exponential(offline, _PERIODS)
            lengths = rng.exponential(online, _PERIODS)
            for gap, length in zip(gaps, lengths, strict=True):
                starts.append(ends[-1] + gap)
                ends.append(starts[-1] + length)
        return starts, ends

    def next_online(self, client_id: str, now: float) -> float:
        """The earliest time >= ``now`` the device is online (``inf``: never again)."""
        starts, ends = self._intervals(client_id, now)
        k = bisect.bisect_right(ends, now)
        if k == len(ends):
            return math.inf
        return max(now, starts[k])

    def online_until(self, client_id: str, now: float) -> float:
        """When the device, online at ``now``, goes offline (``now`` if it is offline)."""
        starts, ends = self._intervals(client_id, now)
        k = bisect.bisect_right(ends, now)
        if k == len(ends) or starts[k] > now:
            return now
        return ends[k]


@dataclass(frozen=True)
class DeviceClock:
    """Each client's compute time per example (``seconds_per_example``, s) and training
    size, a fixed ``latency_s`` per task (download and upload), and when each device is
    online (``availability``; ``None``: always)."""

    seconds_per_example: Mapping[str, float]
    train_sizes: Mapping[str, int]
    latency_s: float = 0.0
    availability: Availability | None = field(default=None, compare=False)

    def seconds(self, task: FitTask) -> float:
        """How long ``task`` takes on its client's device, in simulated seconds."""
        return self.client_seconds(task.client_id, task.config.local_epochs)

    def client_seconds(self, client_id: str, epochs: int) -> float:
        """How long ``epochs`` local epochs take on ``client_id``'s device (s)."""
        work = epochs * self.train_sizes[client_id]
        return work * self.seconds_per_example[client_id] + self.latency_s

    def next_online(self, client_id: str, now: float) -> float:
        """The earliest time >= ``now`` the device can take a task."""
        return now if self.availability is None else self.availability.next_online(client_id, now)

    def online_until(self, client_id: str, now: float) -> float:
        """When the device, online at ``now``, goes offline (``inf``: never)."""
        if self.availability is None:
            return math.inf
        return self.availability.online_until(client_id, now)

    def task_end(self, client_id: str, epochs: int, start: float) -> tuple[float, bool]:
        """When a task started at ``start`` ends, and whether it completed (``False``: its
        device went offline first, at that time)."""
        finish = start + self.client_seconds(client_id, epochs)
        offline = self.online_until(client_id, start)
        return (finish, True) if finish <= offline else (offline, False)

    def round_seconds(self, sampled: Sequence[str], epochs: int, start: float) -> float:
        """A synchronous round's duration from ``start``: until its last sampled task,
        among those whose device was online at the start, finished or was lost."""
        ends = [
            self.task_end(c, epochs, start)[0]
            for c in sampled
            if self.next_online(c, start) == start
        ]
        return max(ends, default=start) - start


def draw_speeds(
    client_ids: Sequence[str],
    kind: str,
    mean: float,
    rng: np.random.Generator,
    sigma: float = 1.0,
    shape: float = 1.5,
) -> dict[str, float]:
    """Each client's compute time per example (s), ``kind`` as the module docstring says,
    drawn in sorted client-id order."""
    checks.one_of("clock.speeds", kind, [s for s in SPEEDS if s != "none"])
    checks.positive("clock.seconds_per_example", mean)
    ids = sorted(client_ids)
    if kind == "constant":
        times = np.full(len(ids), mean)
    elif kind == "lognormal":
        checks.positive("clock.speed_sigma", sigma)
        times = mean * np.exp(sigma * rng.standard_normal(len(ids)) - sigma**2 / 2)
    else:
        if not (np.isfinite(shape) and shape > 1):
            raise ConfigError("clock.speed_shape", shape, "a number > 1 (a finite mean)")
        uniform = 1.0 - rng.random(len(ids))  # (0, 1]
        times = mean * (shape - 1) / shape * uniform ** (-1 / shape)
    return {client: float(t) for client, t in zip(ids, times, strict=True)}


def read_trace(path: str | Path) -> dict[str, Any]:
    """A trace file: JSON ``{"client id": {"seconds_per_example": s, "online": [[start,
    end], …]}, …}``; either key may be left out for every client."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("clock.trace", str(path), f"a readable JSON trace file ({exc})") from None
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise ConfigError("clock.trace", str(path), "a JSON object of client id → settings")
    return document
