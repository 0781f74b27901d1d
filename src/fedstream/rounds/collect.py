"""Phase 3, collect: the clients' answers decoded, validated and passed on in task order."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fedstream.compression.codecs import Compression, CompressionError, decode_update
from fedstream.errors import ClientFailure
from fedstream.params import Params
from fedstream.rounds.plan import RoundPlan
from fedstream.transport.base import Delivery
from fedstream.types import WITHIN_CLIP, ClientUpdate, FitConfig

if TYPE_CHECKING:
    from fedstream.secure.session import SecureSumResult


def check_update(
    update: ClientUpdate,
    global_params: Params,
    round_number: int,
    max_norm: float | None,
    fit: FitConfig | None = None,
) -> str | None:
    """Why ``update`` must be rejected, or ``None`` if it is acceptable.

    Under DP-SGD (``fit.sample_dp``) the weight must be 1, so that it does not tell the
    server the client's number of examples. Under client-level DP (``fit.privacy``) the
    weight must be 1 and, when the server adds
    the noise, the norm at most the clip bound: an update that breaks either would break
    the sum's sensitivity, and with it the privacy guarantee.
    """
    if update.round != round_number:
        return f"update is for round {update.round}, expected round {round_number}"
    if not (math.isfinite(update.weight) and update.weight > 0):
        return f"weight={update.weight!r} is invalid: expected a finite number > 0"
    try:
        global_params.check_compatible(update.payload, "payload")
    except ValueError as exc:
        return str(exc)
    if not update.payload.is_finite():
        return "payload contains NaN or Inf"
    if not all(math.isfinite(v) for v in update.extras.values()):
        return f"extras={dict(update.extras)!r} is invalid: expected finite numbers"
    bounds = {"max_update_norm": max_norm} if max_norm is not None else {}
    if fit is not None and fit.sample_dp is not None and update.weight != 1.0:
        return (
            f"weight={update.weight!r} is invalid: expected 1 under sample-level DP "
            "(a client's example count is private)"
        )
    privacy = fit.privacy if fit is not None else None
    if privacy is not None:
        if update.weight != 1.0:
            return f"weight={update.weight!r} is invalid: expected 1 under client-level DP"
        bit = update.extras.get(WITHIN_CLIP)
        if bit is not None and bit not in (-0.5, 0.5):
            return f"extras[{WITHIN_CLIP!r}]={bit!r} is invalid: expected -0.5 or 0.5"
        if privacy.noise_multiplier == 0:  # float rounding of the client's scaling aside
            bounds["the DP clip bound"] = privacy.clip * (1 + 1e-6)
    if bounds:
        norm = update.payload.norm()
        for label, bound in bounds.items():
            if norm > bound:
                return f"payload norm {norm:.6g} exceeds {label}={bound:.6g}"
    return None


class InTaskOrder:
    """Feeds accepted updates on in the order their tasks were given, whatever order they
    arrive in. Float sums depend on order, so this makes a round's sum, and so the whole
    run, the same in simulation and deployment and after a resume. An update waits only for
    the ones before it still outstanding; in the simulation they arrive in order and
    nothing waits."""

    def __init__(self, order: Sequence[str], accept: Callable[[ClientUpdate], None]) -> None:
        self._order = list(order)
        self._next = 0
        self._settled: dict[str, ClientUpdate | None] = {}
        self._accept = accept

    def settle(self, client_id: str, update: ClientUpdate | None) -> None:
        """``client_id``'s outcome: its accepted update, or ``None`` if it failed."""
        self._settled[client_id] = update
        while self._next < len(self._order) and self._order[self._next] in self._settled:
            ready = self._settled.pop(self._order[self._next])
            self._next += 1
            if ready is not None:
                self._accept(ready)

    def finish(self) -> None:
        """Pass on whatever is still waiting (those before it never answered)."""
        for client_id in self._order[self._next :]:
            ready = self._settled.pop(client_id, None)
            if ready is not None:
                self._accept(ready)
        self._next = len(self._order)


@dataclass(frozen=True)
class Collected:
    """Who gave a valid update (in task order), who failed and why, each accepted client's
    (weight, training metrics), and the bytes each way so far."""

    completed: tuple[str, ...]
    failures: tuple[ClientFailure, ...]
    train_metrics: tuple[tuple[float, Mapping[str, float]], ...] = ()
    bytes_down: int = 0
    bytes_up: int = 0

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


def collect_updates(
    deliveries: Iterable[Delivery[ClientUpdate]],
    plan: RoundPlan,
    like: Params,
    accept: Callable[[ClientUpdate], None] | None,
    max_norm: float | None,
    codec: Compression | None,
    mask: npt.NDArray[np.bool_] | None,
) -> Collected:
    """Take every delivery of the round's fit call: decode (``codec``) and validate each
    answer against ``like`` and the plan, and hand the accepted updates to ``accept`` in
    task order. With ``accept=None`` the updates stay on the clients (a secure sum): the
    server gets only their metrics and checks only the round."""
    round_number = plan.round
    failures = list(plan.failures)
    tally = _Tally()
    on_clients = accept is None

    def accepted(update: ClientUpdate) -> None:
        if accept is not None:
            accept(update)
        tally.completed.append(update.client_id)
        tally.train_metrics.append((1.0 if on_clients else update.weight, update.metrics))

    in_order = InTaskOrder([t.client_id for t in plan.tasks], accepted)
    bytes_down = bytes_up = 0
    expected = {task.client_id for task in plan.tasks}
    seeds = {t.client_id: t.config.seed for t in plan.tasks}
    for delivery in deliveries:
        bytes_down += delivery.bytes_down
        bytes_up += delivery.bytes_up
        result = delivery.result
        if isinstance(result, ClientFailure):
            failures.append(result)
            if result.client_id in expected:
                expected.discard(result.client_id)
                in_order.settle(result.client_id, None)
            continue
        if result.client_id not in expected:
            failures.append(
                ClientFailure(
                    result.client_id, "validate", "not asked in this round, or answered twice"
                )
            )
            continue
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
                rejection = check_update(result, like, round_number, max_norm, plan.fit)
        if rejection is not None:
            failures.append(ClientFailure(result.client_id, "validate", rejection))
        in_order.settle(result.client_id, None if rejection is not None else result)
    in_order.finish()
    failures += [
        ClientFailure(t.client_id, "train", "no answer")
        for t in plan.tasks
        if t.client_id in expected
    ]
    return Collected(
        tuple(tally.completed),
        tuple(failures),
        tuple(tally.train_metrics),
        bytes_down,
        bytes_up,
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
