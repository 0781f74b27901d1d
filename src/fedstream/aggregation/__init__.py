"""Aggregation beyond the streaming sum: the round's individual updates, and the robust
rules that read them."""

from fedstream.aggregation.robust import ROBUST_RULES, coordinate_median, trimmed_mean
from fedstream.aggregation.updates import UpdateBuffer, UpdateMatrix

__all__ = ["ROBUST_RULES", "UpdateBuffer", "UpdateMatrix", "coordinate_median", "trimmed_mean"]
