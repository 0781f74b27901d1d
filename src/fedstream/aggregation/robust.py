"""Robust aggregation rules: pure functions from the round's updates to one delta.

Each takes an :class:`UpdateMatrix` (row k = client k's payload) and returns one flat
float64 vector, computed column block by column block so memory stays bounded. They
ignore the clients' declared weights: a rule that a minority cannot steer must not let one
client outweigh the rest by claiming more examples.

- ``coordinate_median``: the median of every coordinate (Yin et al. 2018, "FedMedian");
- ``trimmed_mean``: every coordinate's mean after dropping its ``⌊β·n⌋`` largest and
  smallest values (Yin et al. 2018);
- ``krum`` and ``multi_krum``: the update(s) whose ``n − f − 2`` nearest neighbours are
  nearest, averaged (Blanchard et al. 2017; El Mhamdi et al. 2018); they need
  ``n > 2f + 2``;
- ``bulyan``: ``n − 2f`` updates chosen by Krum one at a time, then in every coordinate
  the mean of the ``n − 4f`` values nearest its median (El Mhamdi et al. 2018); needs
  ``n > 4f + 3``;
- ``geometric_median``: the point with the least summed distance to the updates, by
  smoothed Weiszfeld iterations (RFA, Pillutla et al. 2022);
- ``centered_clipping``: from the coordinate median, a few steps of the mean of the
  updates' differences clipped to radius τ (Karimireddy et al. 2021);
- ``norm_bound``: the mean after scaling every update down to norm at most M (Sun et al.
  2019).

Where a radius or bound is not given, it is the median of the round's own norms: a
majority of honest clients then sets the scale, whatever the model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from fedstream import checks
from fedstream.aggregation.updates import UpdateMatrix
from fedstream.errors import ConfigError

RobustRule = Callable[[UpdateMatrix], npt.NDArray[np.float64]]


def coordinate_median(updates: UpdateMatrix) -> npt.NDArray[np.float64]:
    """The coordinate-wise median of the updates (the mean of the middle two for an even
    count)."""
    out = np.empty(updates.rows.shape[1], np.float64)
    for columns, block in updates.column_blocks():
        out[columns] = np.median(block, axis=0)
    return out


def trimmed_count(count: int, beta: float) -> int:
    """How many values ``trimmed_mean`` drops from each end: ⌊β·n⌋, leaving at least one."""
    checks.in_unit_interval("trim_fraction", beta, include_zero=True, include_one=False)
    trimmed = math.floor(beta * count)
    if count - 2 * trimmed < 1:
        raise ConfigError("trim_fraction", beta, f"below 0.5 of the {count} updates (none left)")
    return trimmed


def trimmed_mean(updates: UpdateMatrix, beta: float) -> npt.NDArray[np.float64]:
    """Every coordinate's mean after dropping its ⌊β·n⌋ largest and ⌊β·n⌋ smallest values."""
    trimmed = trimmed_count(updates.count, beta)
    out = np.empty(updates.rows.shape[1], np.float64)
    for columns, block in updates.column_blocks():
        ordered = np.sort(block, axis=0)
        out[columns] = ordered[trimmed : updates.count - trimmed].mean(axis=0)
    return out


def row_square_norms(
    updates: UpdateMatrix, center: npt.NDArray[np.float64] | None = None
) -> npt.NDArray[np.float64]:
    """‖row_k − center‖² of every row (center 0 when not given), shape (n,)."""
    out = np.zeros(updates.count, np.float64)
    for columns, block in updates.column_blocks():
        if center is not None:
            block = block - center[columns]
        out += np.einsum("ij,ij->i", block, block)
    return out


def pairwise_square_distances(updates: UpdateMatrix) -> npt.NDArray[np.float64]:
    """‖row_i − row_j‖² for every pair, shape (n, n), from the Gram matrix block by block."""
    gram = np.zeros((updates.count, updates.count), np.float64)
    for _, block in updates.column_blocks():
        gram += block @ block.T
    norms = np.diag(gram)
    return np.maximum(norms[:, None] + norms[None, :] - 2 * gram, 0.0)


def check_byzantine(rule: str, count: int, byzantine: int) -> None:
    """A rule asked to tolerate more attackers than its bound allows is refused, naming
    the numbers: Krum and Multi-Krum need n > 2f + 2, Bulyan n > 4f + 3."""
    checks.non_negative_int("strategy.byzantine", byzantine)
    factor, extra = (4, 3) if rule == "bulyan" else (2, 2)
    if count <= factor * byzantine + extra:
        most = max((count - extra - 1) // factor, -1)
        tolerable = f"at most {most}" if most >= 0 else "no attackers at all"
        raise ConfigError(
            "strategy.byzantine",
            byzantine,
            f"{tolerable} for {rule} over {count} updates (it needs n > {factor}f + {extra})",
        )


def krum_scores(distances: npt.NDArray[np.float64], byzantine: int) -> npt.NDArray[np.float64]:
    """Each row's Krum score: the sum of its ``n − f − 2`` smallest square distances to the
    other rows."""
    count = len(distances)
    nearest = count - byzantine - 2
    others = np.sort(distances + np.diag(np.full(count, np.inf)), axis=1)[:, :nearest]
    return np.asarray(others.sum(axis=1), dtype=np.float64)


def _mean_of_rows(updates: UpdateMatrix, chosen: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    out = np.empty(updates.rows.shape[1], np.float64)
    for columns, block in updates.column_blocks():
        out[columns] = block[chosen].mean(axis=0)
    return out


def multi_krum(
    updates: UpdateMatrix, byzantine: int, keep: int | None = None
) -> npt.NDArray[np.float64]:
    """The mean of the ``keep`` updates with the lowest Krum scores (default ``n − f``;
    ``keep=1`` is Krum). Ties go to the earlier row."""
    check_byzantine("multi_krum" if keep != 1 else "krum", updates.count, byzantine)
    keep = updates.count - byzantine if keep is None else keep
    if not 1 <= keep <= updates.count:
        raise ConfigError("strategy.multi_krum_keep", keep, f"between 1 and {updates.count}")
    scores = krum_scores(pairwise_square_distances(updates), byzantine)
    return _mean_of_rows(updates, np.argsort(scores, kind="stable")[:keep])


def bulyan(updates: UpdateMatrix, byzantine: int) -> npt.NDArray[np.float64]:
    """Bulyan: choose ``θ = n − 2f`` updates by Krum one at a time (each time over the rows
    not yet chosen), then in every coordinate average the ``θ − 2f`` chosen values nearest
    the chosen values' median."""
    count = updates.count
    check_byzantine("bulyan", count, byzantine)
    distances = pairwise_square_distances(updates)
    remaining = list(range(count))
    chosen: list[int] = []
    while len(chosen) < count - 2 * byzantine:
        sub = distances[np.ix_(remaining, remaining)]
        scores = (
            krum_scores(sub, min(byzantine, len(remaining) - 3))
            if len(remaining) > 2
            else np.zeros(len(remaining))
        )
        best = remaining[int(np.argmin(scores))]
        chosen.append(best)
        remaining.remove(best)
    keep = len(chosen) - 2 * byzantine
    rows = np.array(sorted(chosen))
    out = np.empty(updates.rows.shape[1], np.float64)
    for columns, block in updates.column_blocks():
        values = block[rows]
        median = np.median(values, axis=0)
        nearest = np.argsort(np.abs(values - median), axis=0, kind="stable")[:keep]
        out[columns] = np.take_along_axis(values, nearest, axis=0).mean(axis=0)
    return out


def geometric_median(
    updates: UpdateMatrix, iterations: int = 100, tolerance: float = 1e-7
) -> npt.NDArray[np.float64]:
    """The geometric median by smoothed Weiszfeld iterations, from the mean: each step
    averages the updates weighted by 1 / max(ν, distance), ν = 1e-12 · the largest norm.
    Stops when a step moves less than ``tolerance`` × the median norm."""
    norms = np.sqrt(row_square_norms(updates))
    smoothing = 1e-12 * max(float(norms.max()), 1e-300)
    uniform = np.full(updates.count, 1.0 / updates.count)
    center = _weighted_rows(updates, uniform)
    scale = float(np.median(norms)) or 1.0
    for _ in range(iterations):
        distances = np.sqrt(row_square_norms(updates, center))
        weights = 1.0 / np.maximum(distances, smoothing)
        moved = _weighted_rows(updates, weights / weights.sum())
        step = float(np.linalg.norm(moved - center))
        center = moved
        if step <= tolerance * scale:
            break
    return center


def _weighted_rows(
    updates: UpdateMatrix, weights: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    out = np.empty(updates.rows.shape[1], np.float64)
    for columns, block in updates.column_blocks():
        out[columns] = weights @ block
    return out


def shrink_factors(norms: npt.NDArray[np.float64], limit: float) -> npt.NDArray[np.float64]:
    """min(1, limit / norm) per row: what scales each row down to norm at most ``limit``."""
    return np.minimum(1.0, limit / np.maximum(norms, 1e-300))


def centered_clipping(
    updates: UpdateMatrix, radius: float | None = None, iterations: int = 3
) -> npt.NDArray[np.float64]:
    """From the coordinate median v: ``iterations`` times, v ← v + mean_k(clip_τ(u_k − v)),
    clip_τ scaling a difference down to norm τ; τ = ``radius``, or the median of the
    differences' norms at each step."""
    center = coordinate_median(updates)
    for _ in range(iterations):
        distances = np.sqrt(row_square_norms(updates, center))
        tau = radius if radius is not None else float(np.median(distances))
        scales = shrink_factors(distances, tau)
        center = (
            center
            + _weighted_rows(updates, scales / updates.count)
            - center * (scales.sum() / updates.count)
        )
    return center


def norm_bounded_mean(updates: UpdateMatrix, bound: float | None = None) -> npt.NDArray[np.float64]:
    """The plain mean after scaling each update down to norm at most M = ``bound``, or the
    median of the round's norms."""
    norms = np.sqrt(row_square_norms(updates))
    limit = bound if bound is not None else float(np.median(norms))
    scales = shrink_factors(norms, limit)
    return _weighted_rows(updates, scales / updates.count)


def bucketed(updates: UpdateMatrix, size: int, rng: np.random.Generator) -> UpdateMatrix:
    """Bucketing (Karimireddy et al. 2022): the updates shuffled by ``rng`` and averaged in
    buckets of ``size`` (the last may be smaller), as the rows a robust rule then reads.
    Averaging first narrows the spread that non-IID data gives honest updates, so a rule
    tells attackers from honest clients better; each bucket holds at most one attacker's
    share of the damage per attacker."""
    checks.positive_int("strategy.bucket_size", size)
    order = rng.permutation(updates.count)
    groups = [order[i : i + size] for i in range(0, updates.count, size)]
    means = np.empty((len(groups), updates.rows.shape[1]), np.float64)
    for columns, block in updates.column_blocks():
        for k, group in enumerate(groups):
            means[k, columns] = block[group].mean(axis=0)
    return UpdateMatrix(
        tuple(f"bucket-{k}" for k in range(len(groups))),
        np.ones(len(groups)),
        means,
        updates.like,
    )


ROBUST_RULES = (
    "median",
    "trimmed_mean",
    "krum",
    "multi_krum",
    "bulyan",
    "geometric_median",
    "centered_clipping",
    "norm_bound",
)
"""The rules ``Robust`` strategies can name."""
