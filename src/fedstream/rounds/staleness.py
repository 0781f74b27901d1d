"""How much an asynchronous update counts, by its staleness (the buffered loop's weighting).

An update's staleness is how many server steps the global model took between the version
the client trained from and the step that uses the update: 0 for an update on the current
model. The rules are those of FedAsync (Xie et al. 2019) and FLSim's FedBuff
(Nguyen et al. 2022), with ``s`` the staleness:

- ``constant``: 1, every update counts fully;
- ``polynomial``: ``(1 + s)^-a``; FedBuff's default is ``a = 0.5``;
- ``hinge``: 1 while ``s <= b``, then ``1 / (a·(s − b) + 1)``.

The factor scales the update's payload, never its example weight, so a buffer of stale
updates moves the model less, as in FedBuff's Σ s(τ_i)·Δ_i / K.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedstream import checks

RULES = ("constant", "polynomial", "hinge")


@dataclass(frozen=True)
class StalenessRule:
    """A staleness weighting (module docstring): ``kind``, the exponent ``a`` of
    ``polynomial`` and the slope ``a`` and the grace ``b`` (server steps) of ``hinge``."""

    kind: str = "polynomial"
    exponent: float = 0.5
    hinge_a: float = 10.0
    hinge_b: int = 4

    def __post_init__(self) -> None:
        checks.one_of("staleness", self.kind, list(RULES))
        checks.non_negative("staleness_exponent", self.exponent)
        checks.non_negative("staleness_hinge_a", self.hinge_a)
        checks.non_negative_int("staleness_hinge_b", self.hinge_b)


def staleness_weight(staleness: int, rule: StalenessRule) -> float:
    """The factor in (0, 1] an update of ``staleness`` server steps is scaled by."""
    checks.non_negative_int("staleness", staleness)
    if rule.kind == "polynomial":
        return float((1 + staleness) ** -rule.exponent)
    if rule.kind == "hinge" and staleness > rule.hinge_b:
        return 1.0 / (rule.hinge_a * (staleness - rule.hinge_b) + 1.0)
    return 1.0
