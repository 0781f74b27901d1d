"""L2 clipping of a whole update, safe for an all-zero one."""

from __future__ import annotations

from fedstream import checks
from fedstream.params import Params


def clip_l2(update: Params, bound: float) -> tuple[Params, float]:
    """Scale ``update`` so its L2 norm (over all entries) is at most ``bound``.

    Returns (clipped update, norm before clipping). An update already within the bound,
    including an all-zero one, comes back unchanged: the factor is min(1, bound/norm) and
    is never computed as bound/0.
    """
    checks.positive("clip", bound)
    norm = update.norm()
    if norm <= bound:
        return update, norm
    return update * (bound / norm), norm
