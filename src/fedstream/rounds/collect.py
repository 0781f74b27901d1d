"""Phase 3, collect: the clients' answers decoded, validated and passed on in task order."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fedstream.client.algorithms import extras_problem
from fedstream.compression.codecs import Compression, CompressionError, decode_update
from fedstream.errors import ClientFailure
from fedstream.params import Params
from fedstream.rounds.config import UpdateBounds
from fedstream.rounds.plan import RoundPlan
from fedstream.transport.base import Delivery, Fitted, StackedDelivery
from fedstream.types import WITHIN_CLIP, ClientUpdate, FitConfig, UpdateBlock

if TYPE_CHECKING:
    from fedstream.secure.session import SecureSumResult


MAX_WEIGHT = float(2**53)
"""No declared weight may exceed 2^53: past it a float64 no longer holds every integer, so
it cannot be an example count, and a sum of such weights can overflow."""


def check_update(
    update: ClientUpdate,
    global_params: Params,
    round_number: int,
    max_norm: float | None,
    fit: FitConfig | None = None,
    max_weight: float | None = None,
) -> str | None:
    """Why ``update`` must be rejected, or ``None`` if it is acceptable."""
    return _check(update, global_params, round_number, max_norm, fit, max_weight)[0]


def _check(
    update: ClientUpdate,
    global_params: Params,
    round_number: int,
    max_norm: float | None,
    fit: FitConfig | None,
    max_weight: float | None,
) -> tuple[str | None, float]:
    """Why ``update`` must be rejected (or ``None``), and its payload's L2 norm.

    Under DP-SGD (``fit.sample_dp``) the weight must be 1, so that it does not tell the
    server the client's number of examples. Under client-level DP (``fit.privacy``) the
    weight must be 1 and, when the server adds the noise, the norm at most the clip bound:
    an update that breaks either would break the sum's sensitivity, and with it the privacy
    guarantee.
    """
    if update.round != round_number:
        return f"update is for round {update.round}, expected round {round_number}", 0.0
    if not (math.isfinite(update.weight) and 0 < update.weight <= MAX_WEIGHT):
        return f"weight={update.weight!r} is invalid: expected a number in (0, 2^53]", 0.0
    if max_weight is not None and update.weight > max_weight:
        return f"weight={update.weight!r} exceeds max_client_weight={max_weight:g}", 0.0
    try:
        global_params.check_compatible(update.payload, "payload")
    except ValueError as exc:
        return str(exc), 0.0
    norm = update.payload.norm()  # one pass: NaN or Inf anywhere makes it non-finite
    if not math.isfinite(norm):
        if not update.payload.is_finite():
            return "payload contains NaN or Inf", norm
        return "payload norm overflows: entries beyond any model's range", norm
    if not all(math.isfinite(v) for v in update.extras.values()):
        return f"extras={dict(update.extras)!r} is invalid: expected finite numbers", norm
    problem = extras_problem(update, fit) if fit is not None else None
    if problem is not None:  # what the client's algorithm can honestly send
        return problem, norm
    bounds = {"max_update_norm": max_norm} if max_norm is not None else {}
    if fit is not None and fit.sample_dp is not None and update.weight != 1.0:
        return (
            f"weight={update.weight!r} is invalid: expected 1 under sample-level DP "
            "(a client's example count is private)"
        ), norm
    privacy = fit.privacy if fit is not None else None
    if privacy is not None:
        if update.weight != 1.0:
            return f"weight={update.weight!r} is invalid: expected 1 under client-level DP", norm
        bit = update.extras.get(WITHIN_CLIP)
        if bit is not None and bit not in (-0.5, 0.5):
            return f"extras[{WITHIN_CLIP!r}]={bit!r} is invalid: expected -0.5 or 0.5", norm
        if privacy.noise_multiplier == 0:  # float rounding of the client's scaling aside
            bounds["the DP clip bound"] = privacy.clip * (1 + 1e-6)
    for label, bound in bounds.items():
        if norm > bound:
            return f"payload norm {norm:.6g} exceeds {label}={bound:.6g}", norm
    return None, norm


def lower_median(values: Sequence[float]) -> float:
    """The lower median: with an honest majority it is an honest client's value."""
    return sorted(values)[(len(values) - 1) // 2]


def relative_rejections(
    weights: Sequence[float], norms: Sequence[float], bounds: UpdateBounds
) -> list[str | None]:
    """For each of a round's accepted updates (its declared weight and payload norm), why
    it is rejected relative to the others, or ``None``.

    An update's pull on the weighted mean is its norm times its weight over the round's
    median weight: ``max_norm`` bounds that (a client cannot get past the norm bound by
    declaring a huge weight), and ``outlier_factor`` bounds weight and norm each by that
    multiple of the round's (lower) median."""
    if not weights:
        return []
    median_weight, median_norm = lower_median(weights), lower_median(norms)
    factor = bounds.outlier_factor
    reasons: list[str | None] = []
    for weight, norm in zip(weights, norms, strict=True):
        pull = weight / median_weight * norm
        reason = None
        if bounds.max_norm is not None and pull > bounds.max_norm:
            reason = (
                f"weight × norm: norm {norm:.6g} at weight {weight:g} "
                f"({weight / median_weight:.3g}× the round's median weight) pulls "
                f"{pull:.6g}, above max_update_norm={bounds.max_norm:g}"
            )
        elif factor is not None and weight > factor * median_weight:
            reason = (
                f"weight={weight:g} is an outlier: above outlier_factor={factor:g} × the "
                f"round's median weight {median_weight:g}"
            )
        elif factor is not None and median_norm > 0 and norm > factor * median_norm:
            reason = (
                f"payload norm {norm:.6g} is an outlier: above outlier_factor={factor:g} × "
                f"the round's median norm {median_norm:.6g}"
            )
        reasons.append(reason)
    return reasons


class InTaskOrder:
    """Feeds accepted updates on in the order their tasks were given, whatever order they
    arrive in. Float sums depend on order, so this makes a round's sum, and so the whole
    run, the same in simulation and deployment and after a resume. An update waits only for
    the ones before it still outstanding; in the simulation they arrive in order and
    nothing waits.

    Rows of an ``UpdateBlock`` are settled together (``settle_block``) and passed on as
    blocks (``accept_block``) of the rows that come next to each other in task order."""

    def __init__(
        self,
        order: Sequence[str],
        accept: Callable[[ClientUpdate], None],
        accept_block: Callable[[UpdateBlock], None] | None = None,
    ) -> None:
        self._order = list(order)
        self._next = 0
        self._settled: dict[str, ClientUpdate | tuple[UpdateBlock, int] | None] = {}
        self._accept = accept
        self._accept_block = accept_block

    def settle(self, client_id: str, update: ClientUpdate | None) -> None:
        """``client_id``'s outcome: its accepted update, or ``None`` if it failed."""
        self._settled[client_id] = update
        self._release(until_missing=True)

    def settle_block(self, block: UpdateBlock, accepted: Sequence[bool]) -> None:
        """The outcomes of a block's clients: row k accepted when ``accepted[k]``."""
        for k, (client_id, ok) in enumerate(zip(block.client_ids, accepted, strict=True)):
            self._settled[client_id] = (block, k) if ok else None
        self._release(until_missing=True)

    def finish(self) -> None:
        """Pass on whatever is still waiting (those before it never answered)."""
        self._release(until_missing=False)

    def _release(self, until_missing: bool) -> None:
        """Pass on the settled outcomes from the next in task order: up to the first not
        yet settled, or (``until_missing`` false) all of them, skipping the unsettled.
        Block rows that come next to each other in task order go on as one block, from
        however many blocks they come (a cohort is grouped by size, not by task order)."""
        run: list[tuple[UpdateBlock, int]] = []
        while self._next < len(self._order):
            client_id = self._order[self._next]
            if client_id not in self._settled and until_missing:
                break
            self._next += 1
            ready = self._settled.pop(client_id, None)
            if isinstance(ready, tuple):
                run.append(ready)
            elif ready is not None:
                self._pass_run(run)
                run = []
                self._accept(ready)
        self._pass_run(run)

    def _pass_run(self, run: list[tuple[UpdateBlock, int]]) -> None:
        if not run:
            return
        assert self._accept_block is not None, "a block was settled without accept_block"
        self._accept_block(UpdateBlock.gather(run))


@dataclass(frozen=True)
class Collected:
    """Who gave a valid update (in task order), who failed and why, each accepted client's
    (weight, training metrics) and pull (weight × payload norm; none under a secure sum),
    and the bytes each way so far."""

    completed: tuple[str, ...]
    failures: tuple[ClientFailure, ...]
    train_metrics: tuple[tuple[float, Mapping[str, float]], ...] = ()
    bytes_down: int = 0
    bytes_up: int = 0
    pulls: tuple[tuple[str, float], ...] = ()

    def joined(self, outcome: SecureSumResult) -> Collected:
        """After the aggregation protocol: only the clients it included count as completed;
        its failures and traffic are added."""
        return replace(
            self,
            completed=tuple(outcome.included),
            failures=self.failures + tuple(outcome.failures),
            bytes_down=self.bytes_down + outcome.bytes_down,
            bytes_up=self.bytes_up + outcome.bytes_up,
        )


@dataclass
class _Tally:
    completed: list[str] = field(default_factory=list)
    train_metrics: list[tuple[float, Mapping[str, float]]] = field(default_factory=list)
    pulls: list[tuple[str, float]] = field(default_factory=list)
    bytes_down: int = 0
    bytes_up: int = 0


def collect_updates(
    deliveries: Iterable[Fitted],
    plan: RoundPlan,
    like: Params,
    accept: Callable[[ClientUpdate], None] | None,
    bounds: UpdateBounds,
    codec: Compression | None,
    mask: npt.NDArray[np.bool_] | None,
    accept_block: Callable[[UpdateBlock], None] | None = None,
) -> Collected:
    """Take every delivery of the round's fit call: decode (``codec``) and validate each
    answer against ``like``, the plan and ``bounds``, and hand the accepted updates to
    ``accept`` in task order. With ``accept=None`` the updates stay on the clients (a
    secure sum): the server gets only their metrics and checks only the round. Bounds
    relative to the round hold the updates until the last answer, then screen them.

    A block of updates (``StackedDelivery``) is checked in a few array operations and its
    accepted rows go to ``accept_block`` as blocks, still in task order; without
    ``accept_block``, or where a block cannot be taken whole (a codec, bounds relative to
    the round, a client not asked), its rows go through one by one."""
    round_number = plan.round
    failures = list(plan.failures)
    tally = _Tally()
    on_clients = accept is None
    norms: dict[str, float] = {}
    held: list[ClientUpdate] = []

    def accepted(update: ClientUpdate) -> None:
        if accept is not None:
            accept(update)
        tally.completed.append(update.client_id)
        tally.train_metrics.append((1.0 if on_clients else update.weight, update.metrics))
        if not on_clients:
            tally.pulls.append((update.client_id, update.weight * norms[update.client_id]))

    def accepted_block(block: UpdateBlock) -> None:
        assert accept_block is not None
        accept_block(block)
        weights = block.weights.tolist()
        tally.completed.extend(block.client_ids)
        tally.train_metrics.extend(zip(weights, block.metrics, strict=True))
        tally.pulls.extend(
            (client_id, weight * norms[client_id])
            for client_id, weight in zip(block.client_ids, weights, strict=True)
        )

    screened = bounds.relative and not on_clients
    in_order = InTaskOrder(
        [t.client_id for t in plan.tasks], held.append if screened else accepted, accepted_block
    )
    whole_blocks = accept_block is not None and not screened and not on_clients and codec is None
    expected = {task.client_id for task in plan.tasks}
    seeds = {t.client_id: t.config.seed for t in plan.tasks}

    def take(delivery: Delivery[ClientUpdate]) -> None:
        tally.bytes_down += delivery.bytes_down
        tally.bytes_up += delivery.bytes_up
        result = delivery.result
        if isinstance(result, ClientFailure):
            failures.append(result)
            if result.client_id in expected:
                expected.discard(result.client_id)
                in_order.settle(result.client_id, None)
            return
        if result.client_id not in expected:
            failures.append(
                ClientFailure(
                    result.client_id, "validate", "not asked in this round, or answered twice"
                )
            )
            return
        expected.discard(result.client_id)
        if on_clients:
            rejection = (
                f"answer is for round {result.round}, expected round {round_number}"
                if result.round != round_number
                else None
            )
        else:
            result, rejection = _decode(result, like, codec, seeds[result.client_id], mask)
            if rejection is None:
                rejection, norms[result.client_id] = _check(
                    result, like, round_number, bounds.max_norm, plan.fit, bounds.max_weight
                )
        if rejection is not None:
            failures.append(ClientFailure(result.client_id, "validate", rejection))
        in_order.settle(result.client_id, None if rejection is not None else result)

    def take_block(delivery: StackedDelivery) -> None:
        block, count = delivery.block, len(delivery.block)
        tally.bytes_down += delivery.bytes_down_each * count
        tally.bytes_up += delivery.bytes_up_each * count
        expected.difference_update(block.client_ids)
        reasons, block_norms = _check_block(
            block, like, round_number, bounds.max_norm, plan.fit, bounds.max_weight
        )
        norms.update(zip(block.client_ids, block_norms, strict=True))
        failures.extend(
            ClientFailure(client_id, "validate", reason)
            for client_id, reason in zip(block.client_ids, reasons, strict=True)
            if reason is not None
        )
        in_order.settle_block(block, [reason is None for reason in reasons])

    for delivery in deliveries:
        if not isinstance(delivery, StackedDelivery):
            take(delivery)
        elif whole_blocks and _all_asked(delivery.block.client_ids, expected):
            take_block(delivery)
        else:
            for one in delivery.split():
                take(one)
    in_order.finish()
    if screened:
        reasons = relative_rejections(
            [u.weight for u in held], [norms[u.client_id] for u in held], bounds
        )
        for update, reason in zip(held, reasons, strict=True):
            if reason is None:
                accepted(update)
            else:
                failures.append(ClientFailure(update.client_id, "validate", reason))
    failures += [
        ClientFailure(t.client_id, "train", "no answer")
        for t in plan.tasks
        if t.client_id in expected
    ]
    return Collected(
        tuple(tally.completed),
        tuple(failures),
        tuple(tally.train_metrics),
        tally.bytes_down,
        tally.bytes_up,
        tuple(tally.pulls),
    )


def _all_asked(client_ids: Sequence[str], expected: set[str]) -> bool:
    """Whether every client of a block was asked and has not answered yet, once each."""
    return len(set(client_ids)) == len(client_ids) and expected.issuperset(client_ids)


def _check_block(
    block: UpdateBlock,
    like: Params,
    round_number: int,
    max_norm: float | None,
    fit: FitConfig | None,
    max_weight: float | None,
) -> tuple[list[str | None], list[float]]:
    """``_check`` for every row of ``block``: why each must be rejected (or ``None``) and
    its payload's L2 norm. The rows that are plainly fine (the round, the layout, a
    weight in range, a finite norm within ``max_norm``, and a task config that asks for
    nothing more: no privacy, DP-SGD or FedNova) are found with array operations; every
    other row gets ``_check``'s own verdict and message. The norms are computed as
    ``Params.norm`` computes them, row by row, so they are the same to the last bit."""
    count = len(block)
    norms = [0.0] * count
    fine = np.zeros(count, dtype=bool)
    plain = fit is None or (
        fit.algorithm != "fednova" and fit.privacy is None and fit.sample_dp is None
    )
    if plain and block.round == round_number and _stacked_like(block, like):
        weights, row_norms = block.weights, _row_norms(block.payload, count)
        norms = row_norms.tolist()
        fine = (
            np.isfinite(weights) & (weights > 0) & (weights <= MAX_WEIGHT) & np.isfinite(row_norms)
        )
        if max_weight is not None:
            fine &= weights <= max_weight
        if max_norm is not None:
            fine &= row_norms <= max_norm
    reasons: list[str | None] = [None] * count
    for k in np.flatnonzero(~fine).tolist():
        reasons[k], norms[k] = _check(block.row(k), like, round_number, max_norm, fit, max_weight)
    return reasons, norms


def _row_norms(payload: Params, count: int) -> npt.NDArray[np.float64]:
    """Each row's ``Params.norm`` of a stacked payload, (K,), to the same bits.

    ``Params.norm`` is ``sqrt`` of the sum, entry by entry in order, of each entry's
    ``np.vdot`` with itself. ``np.vecdot`` calls numpy's dot function, the one ``vdot``
    calls, on every row in turn (the same strides, so the same BLAS call), all in C; the
    float64 squares are then added entry by entry, as the Python sum adds them."""
    total = np.zeros(count, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing row is rejected
        for entry in payload.values():
            rows = entry.reshape(count, -1)
            total += np.vecdot(rows, rows).astype(np.float64)
    return np.sqrt(total)


def _stacked_like(block: UpdateBlock, like: Params) -> bool:
    """Whether every row of ``block`` has ``like``'s names, order, shapes and dtypes."""
    if list(block.payload) != list(like):
        return False
    count = len(block)
    return all(
        a.shape == (count, *like[n].shape) and a.dtype == like[n].dtype
        for n, a in block.payload.items()
    )


def _decode(
    update: ClientUpdate,
    like: Params,
    codec: Compression | None,
    seed: int,
    mask: npt.NDArray[np.bool_] | None,
) -> tuple[ClientUpdate, str | None]:
    """The update with its payload decoded to dense ``like``-shaped arrays, or why not."""
    if codec is None:
        return update, None
    try:
        return replace(update, payload=decode_update(update.payload, like, codec, seed, mask)), None
    except CompressionError as exc:
        return update, str(exc)
