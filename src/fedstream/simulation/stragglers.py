"""Systems heterogeneity for simulations: stragglers, as a task policy of the round loop.

In the FedProx paper's setting (Li et al. 2020) a share of each round's clients are
stragglers that can finish only part of their local work. This is a property of the
simulated devices, not of the round loop, so it enters a round as a ``TaskPolicy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from fedstream import checks
from fedstream.client.base import FitTask
from fedstream.errors import ClientFailure, ConfigError


@dataclass(frozen=True)
class Stragglers:
    """``fraction`` of each round's tasks are stragglers: each finishes only a uniformly
    drawn 1 … E−1 of its E local epochs. With ``drop`` they are dropped and recorded as
    failures (what FedAvg does); otherwise their partial work is kept (what FedProx does).
    Draws from the round's generator: which tasks straggle, then how far each gets."""

    fraction: float
    drop: bool = True

    def __post_init__(self) -> None:
        checks.in_unit_interval(
            "straggler_fraction", self.fraction, include_zero=True, include_one=True
        )

    def __call__(
        self, tasks: Sequence[FitTask], rng: np.random.Generator
    ) -> tuple[list[FitTask], list[ClientFailure]]:
        if not tasks:
            return [], []
        epochs = tasks[0].config.local_epochs
        if epochs < 2:
            raise ConfigError("local_epochs", epochs, "at least 2 when there are stragglers")
        count = round(self.fraction * len(tasks))
        slow = rng.choice(len(tasks), size=count, replace=False)
        partial = rng.integers(1, epochs, size=count)
        done = {int(index): int(part) for index, part in zip(slow, partial, strict=True)}
        kept: list[FitTask] = []
        failures: list[ClientFailure] = []
        for index, task in enumerate(tasks):
            if index not in done:
                kept.append(task)
            elif self.drop:
                reason = f"straggler: finished {done[index]} of {epochs} epochs, dropped"
                failures.append(ClientFailure(task.client_id, "straggle", reason))
            else:
                kept.append(replace(task, config=replace(task.config, local_epochs=done[index])))
        return kept, failures
