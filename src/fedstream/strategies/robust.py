"""Robust aggregation as a strategy: any strategy, stepping on a robust rule's delta.

``Robust(inner, rule)`` asks the round for its individual updates (the aggregation seam,
docs/architecture.md) and replaces the example-weighted mean delta with a robust rule's
(``fedstream.aggregation.robust``) before ``inner`` takes its server step, so the rules
compose with every server optimiser (FedAvg, FedAvgM, FedAdam, …). Declared example counts
play no part: each client counts once. A secure sum reveals no individual update, so a
robust strategy with secure aggregation (or under DP noise on the sum) is refused at
configuration time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from fedstream import checks
from fedstream.aggregation.robust import ROBUST_RULES, coordinate_median, trimmed_mean
from fedstream.aggregation.updates import UpdateMatrix
from fedstream.errors import RoundFailedError
from fedstream.strategies.base import StrategyWrapper
from fedstream.types import ServerState, WeightedSum


@dataclass(frozen=True)
class Robust(StrategyWrapper):
    """``inner`` with its mean delta replaced by ``rule`` over the round's updates:
    ``"median"`` (coordinate-wise) or ``"trimmed_mean"`` (dropping ``trim_fraction`` of the
    values at each end of every coordinate)."""

    rule: str = "median"
    trim_fraction: float = 0.1
    needs_individual_updates: ClassVar[bool] = True

    def __post_init__(self) -> None:
        checks.one_of("aggregator", self.rule, list(ROBUST_RULES))
        checks.in_unit_interval(
            "trim_fraction", self.trim_fraction, include_zero=True, include_one=False
        )

    @property
    def name(self) -> str:
        return f"{self.inner.name}+{self.rule}"

    def robust_delta(self, updates: UpdateMatrix) -> npt.NDArray[np.float64]:
        """The rule applied to the round's updates: one flat float64 vector."""
        if self.rule == "median":
            return coordinate_median(updates)
        return trimmed_mean(updates, self.trim_fraction)

    def server_update(self, state: ServerState, aggregate: WeightedSum) -> ServerState:
        updates = aggregate.updates
        if updates is None:
            raise RoundFailedError(
                state.round + 1, f"{self.name} needs the round's individual updates"
            )
        delta = updates.unflatten(self.robust_delta(updates))
        robust = replace(aggregate, total=delta, weight=1.0, updates=None)
        return self.inner.server_update(state, robust)
