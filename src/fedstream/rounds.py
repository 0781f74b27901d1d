"""The one round loop: sample, broadcast, train, collect, validate, sum, update, evaluate.

Simulation and deployment both call :func:`run_round`; only the ``Transport`` differs.
A round takes a ``ServerState`` and returns a new one with a ``RoundReport``; if the round
cannot produce a model it raises ``RoundFailedError`` and the old state stays valid.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from fedstream import checks
from fedstream.client.base import FitTask
from fedstream.client.encode import upload_codec, upload_mask
from fedstream.compression.codecs import (
    BROADCASTS,
    Compression,
    CompressionError,
    decode_broadcast,
    decode_update,
    encode_broadcast,
)
from fedstream.compression.pruning import prune
from fedstream.errors import ClientFailure, ConfigError, RoundFailedError
from fedstream.params import Params
from fedstream.secure.he import HEConfig
from fedstream.secure.plain import PlainSum
from fedstream.secure.secagg import SecAggConfig
from fedstream.secure.session import he_sum, secure_name, secure_sum
from fedstream.strategies.base import Strategy
from fedstream.transport.base import Transport
from fedstream.types import ClientUpdate, FitConfig, RoundReport, ServerState, WeightedSum

CentralEvaluate = Callable[[Params], Mapping[str, float]]


@dataclass(frozen=True)
class RoundConfig:
    """How each round samples, trains and evaluates.

    ``clients_per_round`` is a count (int ≥ 1) or a fraction of all clients (float in
    (0, 1]); at least ``min_clients`` are sampled and at least that many valid updates are
    needed to aggregate. ``evaluate_fraction`` of all clients evaluate the new global model
    on their test splits every ``evaluate_every`` rounds (0 disables federated evaluation).
    ``max_update_norm`` rejects payloads whose L2 norm exceeds it.

    ``straggler_fraction`` of each round's sampled clients are stragglers (the FedProx
    paper's systems heterogeneity): each can finish only a uniformly drawn 1 … E−1 of the E
    local epochs. With ``drop_stragglers`` they are dropped and recorded (what FedAvg does);
    otherwise their partial work is aggregated (what FedProx does).

    ``compression`` encodes each update on its client (``fedstream.compression``) and
    ``broadcast`` the global params sent to clients (``"none"``, ``"f16"``, ``"q8"``).
    ``prune_fraction`` of each weight tensor is pruned by magnitude after every server
    update (whole output units with ``prune_structured``); clients keep pruned weights at
    zero and send only the kept entries. With ``personalize_epochs`` every evaluating
    client also adapts the global model to its own data for that many epochs and reports
    both (``fed_personal_*``, and per client in ``RoundReport.evaluations``).

    With ``secure_aggregation`` the sum is computed by SecAgg+ (``SecAggConfig``) or under
    homomorphic encryption (``CKKSConfig``, ``PaillierConfig``): the server never sees an
    update, only the sum over the clients that completed the protocol.
    """

    clients_per_round: int | float = 10
    min_clients: int = 1
    local_epochs: int = 1
    batch_size: int = 10
    lr: float = 0.05
    evaluate_fraction: float = 1.0
    evaluate_every: int = 1
    max_update_norm: float | None = None
    straggler_fraction: float = 0.0
    drop_stragglers: bool = True
    secure_aggregation: SecAggConfig | HEConfig | None = None
    compression: Compression | None = None
    broadcast: str = "none"
    prune_fraction: float = 0.0
    prune_structured: bool = False
    personalize_epochs: int = 0

    def __post_init__(self) -> None:
        per_round = self.clients_per_round
        if isinstance(per_round, float):
            checks.in_unit_interval(
                "clients_per_round", per_round, include_zero=False, include_one=True
            )
        else:
            checks.positive_int("clients_per_round", per_round)
        checks.positive_int("min_clients", self.min_clients)
        checks.positive_int("local_epochs", self.local_epochs)
        checks.non_negative_int("batch_size", self.batch_size)
        checks.positive("lr", self.lr)
        checks.in_unit_interval(
            "evaluate_fraction", self.evaluate_fraction, include_zero=True, include_one=True
        )
        checks.non_negative_int("evaluate_every", self.evaluate_every)
        if self.max_update_norm is not None:
            checks.positive("max_update_norm", self.max_update_norm)
        checks.in_unit_interval(
            "straggler_fraction", self.straggler_fraction, include_zero=True, include_one=True
        )
        checks.one_of("broadcast", self.broadcast, list(BROADCASTS))
        checks.non_negative_int("personalize_epochs", self.personalize_epochs)
        checks.in_unit_interval(
            "prune_fraction", self.prune_fraction, include_zero=True, include_one=False
        )
        codec, secure = self.compression, self.secure_aggregation
        if codec is not None and secure is not None and not codec.secure_sum_compatible:
            raise ConfigError(
                "compression",
                codec.spec,
                f"no sparsifier with secure_aggregation={secure_name(secure)!r}: each "
                "client's sparse support differs, so a masked or encrypted sum cannot add "
                "them (quantisers q8, q4 and qsgd compose with it)",
            )
        if self.straggler_fraction > 0 and self.local_epochs < 2:
            raise ConfigError(
                "local_epochs", self.local_epochs, "at least 2 when there are stragglers"
            )


def sample_size(num_clients: int, clients_per_round: int | float, min_clients: int) -> int:
    """How many clients a round asks: the count or ⌈fraction·N⌉, at least ``min_clients``,
    and never more than exist (asking for more is an error, not silently fewer)."""
    wanted = (
        math.ceil(clients_per_round * num_clients)
        if isinstance(clients_per_round, float)
        else clients_per_round
    )
    if wanted > num_clients:
        raise ConfigError(
            "clients_per_round", clients_per_round, f"at most the number of clients ({num_clients})"
        )
    if min_clients > num_clients:
        raise ConfigError(
            "min_clients", min_clients, f"at most the number of clients ({num_clients})"
        )
    return max(wanted, min_clients)


def sample_clients(
    rng: np.random.Generator, client_ids: Sequence[str], count: int
) -> tuple[str, ...]:
    """``count`` distinct clients drawn uniformly without replacement."""
    chosen = rng.choice(len(client_ids), size=count, replace=False)
    return tuple(client_ids[int(i)] for i in chosen)


def check_update(
    update: ClientUpdate,
    global_params: Params,
    round_number: int,
    max_norm: float | None,
    fit: FitConfig | None = None,
) -> str | None:
    """Why ``update`` must be rejected, or ``None`` if it is acceptable.

    Under client-level DP (``fit.privacy``) the weight must be 1 and, when the server adds
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
    privacy = fit.privacy if fit is not None else None
    if privacy is not None:
        if update.weight != 1.0:
            return f"weight={update.weight!r} is invalid: expected 1 under client-level DP"
        if privacy.noise_multiplier == 0:  # float rounding of the client's scaling aside
            bounds["the DP clip bound"] = privacy.clip * (1 + 1e-6)
    if bounds:
        norm = update.payload.norm()
        for label, bound in bounds.items():
            if norm > bound:
                return f"payload norm {norm:.6g} exceeds {label}={bound:.6g}"
    return None


def _weighted_mean(
    pairs: Sequence[tuple[float, Mapping[str, float]]], prefix: str
) -> dict[str, float]:
    """Example-weighted mean of each metric over (weight, metrics) pairs, keys prefixed."""
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for weight, metrics in pairs:
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + weight * value
            weights[key] = weights.get(key, 0.0) + weight
    return {f"{prefix}{k}": totals[k] / weights[k] for k in totals if weights[k] > 0}


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


def run_round(
    state: ServerState,
    strategy: Strategy,
    transport: Transport,
    client_ids: Sequence[str],
    config: RoundConfig,
    *,
    evaluate: bool = True,
    central_evaluate: CentralEvaluate | None = None,
) -> tuple[ServerState, RoundReport]:
    """Run round ``state.round + 1`` and return the new state and its report."""
    started = time.perf_counter()
    round_number = state.round + 1
    secure = config.secure_aggregation
    if secure is not None and strategy.needs_individual_updates:
        raise ConfigError(
            "secure_aggregation",
            secure_name(secure),
            f"a sum-based strategy; {strategy.name} needs each client's update, which "
            "secure aggregation hides",
        )
    rng = state.generator()
    count = sample_size(len(client_ids), config.clients_per_round, config.min_clients)
    sampled = sample_clients(rng, client_ids, count)
    seeds = rng.integers(0, 2**63 - 1, size=len(sampled))
    epochs = {client_id: config.local_epochs for client_id in sampled}
    failures: list[ClientFailure] = []
    if config.straggler_fraction > 0:
        count_slow = round(config.straggler_fraction * len(sampled))
        slow = rng.choice(len(sampled), size=count_slow, replace=False)
        partial = rng.integers(1, config.local_epochs, size=count_slow)
        for index, done in zip(slow, partial, strict=True):
            epochs[sampled[int(index)]] = int(done)
    fit = strategy.configure_fit(
        state,
        FitConfig(
            local_epochs=config.local_epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            secure_aggregation=secure is not None,
            compression=config.compression,
            broadcast=config.broadcast,
            masked=config.prune_fraction > 0,
        ),
    )
    tasks = []
    for client_id, seed in zip(sampled, seeds, strict=True):
        if epochs[client_id] < config.local_epochs and config.drop_stragglers:
            reason = (
                f"straggler: finished {epochs[client_id]} of {config.local_epochs} epochs, dropped"
            )
            failures.append(ClientFailure(client_id, "straggle", reason))
            continue
        task_fit = replace(fit, local_epochs=epochs[client_id], seed=int(seed))
        tasks.append(FitTask(client_id, round_number, task_fit))

    accumulator = PlainSum(state.params)
    completed: list[str] = []
    train_metrics: list[tuple[float, Mapping[str, float]]] = []

    def accept(update: ClientUpdate) -> None:
        if secure is None:
            accumulator.add(update.payload, update.weight, update.extras)
        completed.append(update.client_id)
        train_metrics.append((1.0 if secure is not None else update.weight, update.metrics))

    in_order = InTaskOrder([t.client_id for t in tasks], accept)
    bytes_down = bytes_up = 0
    expected = {task.client_id for task in tasks}
    seeds_by_client = {t.client_id: t.config.seed for t in tasks}
    broadcast = (
        encode_broadcast(state.params, config.broadcast, int(rng.integers(2**63 - 1)))
        if config.broadcast != "none"
        else state.params
    )
    codec = upload_codec(fit)
    mask = upload_mask(decode_broadcast(broadcast, config.broadcast), fit)
    for delivery in transport.fit(broadcast, tasks):
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
        if secure is not None:  # the update stays on the client until the secure sum
            rejection = (
                f"answer is for round {result.round}, expected round {round_number}"
                if result.round != round_number
                else None
            )
        else:
            rejection = None
            if codec is not None:
                try:
                    dense = decode_update(
                        result.payload,
                        state.params,
                        codec,
                        seeds_by_client[result.client_id],
                        mask,
                    )
                    result = replace(result, payload=dense)
                except CompressionError as exc:
                    rejection = str(exc)
            if rejection is None:
                rejection = check_update(
                    result, state.params, round_number, config.max_update_norm, fit
                )
        if rejection is not None:
            failures.append(ClientFailure(result.client_id, "validate", rejection))
        in_order.settle(result.client_id, None if rejection is not None else result)
    in_order.finish()
    failures += [
        ClientFailure(t.client_id, "train", "no answer") for t in tasks if t.client_id in expected
    ]
    aggregate: WeightedSum | None = None
    if secure is not None and len(completed) >= max(2, config.min_clients):
        outcome = (
            secure_sum(transport, round_number, completed, state.params, secure, rng)
            if isinstance(secure, SecAggConfig)
            else he_sum(transport, round_number, completed, state.params, secure)
        )
        failures += outcome.failures
        bytes_down += outcome.bytes_down
        bytes_up += outcome.bytes_up
        completed = list(outcome.included)
        aggregate = outcome.aggregate
    fit_done = time.perf_counter()

    if len(completed) < config.min_clients or (secure is not None and len(completed) < 2):
        raise RoundFailedError(
            round_number,
            f"{len(completed)} of {len(sampled)} sampled clients gave a valid update, "
            f"min_clients={config.min_clients}"
            + (" (secure aggregation needs at least 2)" if secure is not None else ""),
            failures,
        )
    if aggregate is None:
        aggregate = accumulator.result(round_number)
    # a strategy that draws (DP noise) takes the generator where sampling left it, in the state
    drawing = state.evolve(rng_state=rng.bit_generator.state)
    new_state = strategy.server_update(drawing, aggregate)
    if not new_state.params.is_finite():
        raise RoundFailedError(round_number, "the server update produced NaN or Inf parameters")
    if config.prune_fraction > 0:
        pruned = prune(new_state.params, config.prune_fraction, config.prune_structured)
        new_state = new_state.evolve(params=pruned)
    rng = new_state.generator()
    update_done = time.perf_counter()

    metrics = _weighted_mean(train_metrics, "train_") | dict(strategy.round_metrics(new_state))
    per_client: dict[str, Mapping[str, float]] = {}
    if evaluate and config.evaluate_fraction > 0:
        evaluators = (
            list(client_ids)
            if config.evaluate_fraction == 1.0
            else list(
                sample_clients(
                    rng, client_ids, math.ceil(config.evaluate_fraction * len(client_ids))
                )
            )
        )
        evaluations: list[tuple[float, Mapping[str, float]]] = []
        shown = (
            encode_broadcast(new_state.params, config.broadcast, int(rng.integers(2**63 - 1)))
            if config.broadcast != "none"
            else new_state.params
        )
        personalize = (
            FitConfig(config.personalize_epochs, config.batch_size, config.lr, seed=round_number)
            if config.personalize_epochs > 0
            else None
        )
        for answer in transport.evaluate(
            shown, round_number, evaluators, config.broadcast, personalize
        ):
            bytes_down += answer.bytes_down
            bytes_up += answer.bytes_up
            if isinstance(answer.result, ClientFailure):
                failures.append(answer.result)
            else:
                evaluations.append((answer.result.num_examples, answer.result.metrics))
                per_client[answer.client_id] = answer.result.metrics
        metrics |= _weighted_mean(evaluations, "fed_")
    if evaluate and central_evaluate is not None:
        metrics |= {f"central_{k}": v for k, v in central_evaluate(new_state.params).items()}
    finished = time.perf_counter()

    report = RoundReport(
        round=round_number,
        sampled=sampled,
        completed=tuple(completed),
        failures=tuple(failures),
        bytes_down=bytes_down,
        bytes_up=bytes_up,
        times={
            "fit_s": fit_done - started,
            "update_s": update_done - fit_done,
            "evaluate_s": finished - update_done,
            "total_s": finished - started,
        },
        metrics=metrics,
        evaluations=per_client,
    )
    new_state = new_state.evolve(round=round_number, rng_state=rng.bit_generator.state)
    return new_state, report


def run_rounds(
    state: ServerState,
    strategy: Strategy,
    transport: Transport,
    client_ids: Sequence[str],
    config: RoundConfig,
    until_round: int,
    central_evaluate: CentralEvaluate | None = None,
) -> Iterator[tuple[ServerState, RoundReport]]:
    """Run rounds until ``state.round == until_round``, yielding each new state and report.

    Evaluation runs every ``config.evaluate_every`` rounds and always in the last one.
    """
    checks.non_negative_int("rounds", until_round)
    while state.round < until_round:
        number = state.round + 1
        every = config.evaluate_every
        evaluate = number == until_round or (every > 0 and number % every == 0)
        state, report = run_round(
            state,
            strategy,
            transport,
            client_ids,
            config,
            evaluate=evaluate,
            central_evaluate=central_evaluate,
        )
        yield state, report
