"""Simulated time for experiments: how long each client's device takes over a task.

A real federation's clients differ in speed by orders of magnitude (phones, sensors,
hospital servers), and a synchronous round waits for its slowest client. The simulation
runs as fast as the machine can; the clock says how long the same work would have taken
on the devices, so synchronous and asynchronous runs are compared at equal simulated time
(``sim_time_s`` in every round's report), reproducibly, whatever the durations.

A task of ``E`` local epochs on ``n`` training examples takes ``E · n · t_k + latency``
seconds on client ``k``, with ``t_k`` its compute time per example, drawn once per client
(from the run's seed, in client-id order) from one of:

- ``constant``: ``t_k = mean`` for every client (tasks still differ by data size);
- ``lognormal``: ``t_k = mean · exp(σ·Z − σ²/2)``, ``Z ~ N(0, 1)``, whose mean is
  ``mean``: heavy-tailed for σ ≥ 1 (σ = 1: the slowest of 100 clients about 10× the
  median);
- ``pareto``: ``t_k = mean · (α − 1)/α · U^(−1/α)``, ``U ~ U(0, 1]``, a Pareto with shape α
  and mean ``mean`` (α > 1; α ≤ 2 has infinite variance).

A synchronous round takes the longest task among the clients that completed it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedstream import checks
from fedstream.client.base import FitTask
from fedstream.errors import ConfigError

SPEEDS = ("none", "constant", "lognormal", "pareto")
CLOCK_STREAM = 0xC10C
"""Mixed into the run's seed for the devices' speeds, a stream of its own."""


@dataclass(frozen=True)
class DeviceClock:
    """Each client's compute time per example (``seconds_per_example``, s) and training
    size, and a fixed ``latency_s`` per task (download and upload)."""

    seconds_per_example: Mapping[str, float]
    train_sizes: Mapping[str, int]
    latency_s: float = 0.0

    def seconds(self, task: FitTask) -> float:
        """How long ``task`` takes on its client's device, in simulated seconds."""
        return self.client_seconds(task.client_id, task.config.local_epochs)

    def client_seconds(self, client_id: str, epochs: int) -> float:
        """How long ``epochs`` local epochs take on ``client_id``'s device (s)."""
        work = epochs * self.train_sizes[client_id]
        return work * self.seconds_per_example[client_id] + self.latency_s

    def round_seconds(self, completed: Sequence[str], epochs: int) -> float:
        """A synchronous round's duration: its slowest completed task (0 with none)."""
        return max((self.client_seconds(c, epochs) for c in completed), default=0.0)


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
