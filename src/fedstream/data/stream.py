"""Client data that arrives while the run goes on, with an optional concept drift.

Each client's training examples reach it one by one, evenly over ``horizon_s`` simulated
seconds (example i of n at i·horizon_s/n, the first at 0), in an order shuffled once from
the run's seed. A task reads its client's data when it starts (``FitTask.data_time``) and
trains on the newest ``window`` examples arrived by then. With ``drift = "shift"`` the
concept changes at ``drift_at_s``: an example arriving from then on carries label
(y + 1) mod classes, and so does evaluation at those times (``labels_at``).

``freshness`` measures, from the steps' reports, how long an example waits from its
arrival until a served model was trained on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedstream import checks
from fedstream.data.base import ClientData
from fedstream.errors import ConfigError
from fedstream.types import RoundReport

DRIFTS = ("none", "shift")


def check_timing(horizon_s: float, drift: str, drift_at_s: float) -> None:
    """The checks a stream's arrival and drift settings get wherever they are given (a
    ``Stream`` here, the config's ``[stream]``)."""
    checks.positive("stream.horizon_s", horizon_s)
    checks.one_of("stream.drift", drift, list(DRIFTS))
    checks.non_negative("stream.drift_at_s", drift_at_s)


@dataclass(frozen=True)
class Stream:
    """Each client's examples in arrival order (``clients``), and how they arrive (module
    docstring). ``classes`` is the number of labels, for the drift's shift."""

    clients: Mapping[str, ClientData]
    horizon_s: float
    window: int
    drift: str = "none"
    drift_at_s: float = 0.0
    classes: int = 0

    def __post_init__(self) -> None:
        checks.positive_int("stream.window", self.window)
        check_timing(self.horizon_s, self.drift, self.drift_at_s)
        if self.drift != "none" and self.classes < 2:
            raise ConfigError("stream.drift", self.drift, "'none' without class labels to shift")

    @classmethod
    def shuffled(
        cls,
        clients: Mapping[str, ClientData],
        rng: np.random.Generator,
        horizon_s: float,
        window: int,
        drift: str = "none",
        drift_at_s: float = 0.0,
        classes: int = 0,
    ) -> Stream:
        """The stream of ``clients``' training examples, each client's in an order drawn
        from ``rng`` (in client-id order)."""
        ordered = {}
        for client_id in sorted(clients):
            data = clients[client_id]
            order = rng.permutation(data.num_train)
            ordered[client_id] = ClientData(
                data.x_train[order], data.y_train[order], data.x_test, data.y_test
            )
        return cls(ordered, horizon_s, window, drift, drift_at_s, classes)

    def arrivals(self, client_id: str) -> npt.NDArray[np.float64]:
        """When each of the client's training examples arrives (s), in order."""
        n = self.clients[client_id].num_train
        return np.arange(n, dtype=np.float64) * (self.horizon_s / n)

    def arrived(self, client_id: str, time_s: float) -> int:
        """How many of the client's examples have arrived by ``time_s`` (at least one)."""
        n = self.clients[client_id].num_train
        return min(n, math.floor(time_s * n / self.horizon_s + 1e-9) + 1)

    def labels_at(
        self, y: npt.NDArray[np.int64], times: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.int64]:
        """The labels ``y`` as the concept has them at ``times`` (one time per label)."""
        if self.drift == "none":
            return y
        return np.where(times >= self.drift_at_s, (y + 1) % self.classes, y)

    def window_at(self, client_id: str, time_s: float) -> ClientData:
        """The client's data as a task started at ``time_s`` reads it: its newest
        ``window`` examples, labelled by the concept when each arrived, and its test
        examples labelled by the concept at ``time_s``."""
        data = self.clients[client_id]
        rows = self.covered(client_id, time_s)
        start, end = rows.start, rows.stop
        arrived = self.arrivals(client_id)[start:end]
        now = np.full(data.num_test, time_s)
        return ClientData(
            data.x_train[start:end],
            self.labels_at(data.y_train[start:end], arrived),
            data.x_test,
            self.labels_at(data.y_test, now),
        )

    def covered(self, client_id: str, data_time: float) -> range:
        """The indices of the client's examples a task started at ``data_time`` trains on."""
        end = self.arrived(client_id, data_time)
        return range(max(0, end - self.window), end)


def data_for(
    clients: Mapping[str, ClientData],
    stream: Stream | None,
    client_id: str,
    data_time: float | None,
) -> ClientData:
    """A client's data for a task: its window of ``stream`` at ``data_time``, or all of it
    without a stream (or a time)."""
    if stream is None or data_time is None:
        return clients[client_id]
    return stream.window_at(client_id, data_time)


@dataclass(frozen=True)
class Freshness:
    """How long examples waited from arrival to the first served model trained on them
    (``lags_s``, one per example served), and how many that arrived before the last step
    were never served (``unserved``)."""

    lags_s: npt.NDArray[np.float64]
    unserved: int

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.lags_s, q)) if len(self.lags_s) else math.nan


def freshness(stream: Stream, reports: Sequence[RoundReport]) -> Freshness:
    """From each step's served updates (``RoundReport.data_times``: client → when its task
    read its data) and the step's ``sim_time_s``: for every example, the time from its
    arrival to the first step that served an update trained on it."""
    if not reports:
        return Freshness(np.zeros(0), 0)
    served: dict[str, npt.NDArray[np.float64]] = {
        c: np.full(data.num_train, np.nan) for c, data in stream.clients.items()
    }
    for report in reports:
        step_time = report.metrics["sim_time_s"]
        for client_id, data_time in report.data_times.items():
            first = served[client_id]
            span = stream.covered(client_id, data_time)
            block = first[span.start : span.stop]
            block[np.isnan(block)] = step_time
    last = reports[-1].metrics["sim_time_s"]
    lags, unserved = [], 0
    for client_id, first in served.items():
        arrivals = stream.arrivals(client_id)
        due = arrivals <= last
        lags.append((first - arrivals)[due & ~np.isnan(first)])
        unserved += int(np.sum(due & np.isnan(first)))
    return Freshness(np.concatenate(lags), unserved)
