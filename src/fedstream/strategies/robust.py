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
from fedstream.aggregation.robust import (
    ROBUST_RULES,
    bucketed,
    bulyan,
    centered_clipping,
    coordinate_median,
    geometric_median,
    multi_krum,
    norm_bounded_mean,
    trimmed_mean,
)
from fedstream.aggregation.updates import UpdateMatrix
from fedstream.errors import ConfigError, RoundFailedError
from fedstream.strategies.base import StrategyWrapper
from fedstream.types import ServerState, WeightedSum

BUCKETS = 0x4255434B  # the bucketing shuffle's stream of the server's generator


@dataclass(frozen=True)
class Robust(StrategyWrapper):
    """``inner`` with its mean delta replaced by ``rule`` over the round's updates (one of
    ``ROBUST_RULES``, ``fedstream.aggregation.robust``): ``trim_fraction`` for
    ``trimmed_mean``; ``byzantine`` (f, the attackers to tolerate) for Krum, Multi-Krum
    and Bulyan, checked against each round's count; ``radius`` for centered clipping and
    ``bound`` for norm bounding (unset: the median of the round's norms); ``bucket_size``
    > 1 averages the shuffled updates in buckets of that size before the rule reads them
    (bucketing, Karimireddy et al. 2022; the rule then sees one row per bucket)."""

    rule: str = "median"
    trim_fraction: float = 0.1
    byzantine: int = 1
    radius: float | None = None
    bound: float | None = None
    bucket_size: int = 1
    needs_individual_updates: ClassVar[bool] = True

    def __post_init__(self) -> None:
        checks.one_of("aggregator", self.rule, list(ROBUST_RULES))
        checks.in_unit_interval(
            "trim_fraction", self.trim_fraction, include_zero=True, include_one=False
        )
        checks.non_negative_int("byzantine", self.byzantine)
        checks.positive_int("bucket_size", self.bucket_size)
        for name in ("radius", "bound"):
            if getattr(self, name) is not None:
                checks.positive(name, getattr(self, name))

    @property
    def name(self) -> str:
        return f"{self.inner.name}+{self.rule}"

    def robust_delta(self, updates: UpdateMatrix) -> npt.NDArray[np.float64]:
        """The rule applied to the round's updates: one flat float64 vector."""
        rule = self.rule
        if rule == "median":
            return coordinate_median(updates)
        if rule == "trimmed_mean":
            return trimmed_mean(updates, self.trim_fraction)
        if rule in ("krum", "multi_krum"):
            return multi_krum(updates, self.byzantine, 1 if rule == "krum" else None)
        if rule == "bulyan":
            return bulyan(updates, self.byzantine)
        if rule == "geometric_median":
            return geometric_median(updates)
        if rule == "centered_clipping":
            return centered_clipping(updates, self.radius)
        return norm_bounded_mean(updates, self.bound)

    def server_update(self, state: ServerState, aggregate: WeightedSum) -> ServerState:
        updates = aggregate.updates
        if updates is None:
            raise RoundFailedError(
                state.round + 1, f"{self.name} needs the round's individual updates"
            )
        if self.bucket_size > 1:
            # drawn from the server's generator without moving it, on a stream of its own
            seed = int(state.generator().integers(2**63))
            updates = bucketed(updates, self.bucket_size, np.random.default_rng([seed, BUCKETS]))
        try:
            flat = self.robust_delta(updates)
        except ConfigError as exc:  # too few updates for the attackers it must tolerate
            raise RoundFailedError(state.round + 1, str(exc)) from None
        delta = updates.unflatten(flat)
        robust = replace(aggregate, total=delta, weight=1.0, updates=None)
        return self.inner.server_update(state, robust)
