"""The one round loop, composed of its phases: plan ▸ broadcast ▸ collect ▸ aggregate ▸
server step ▸ evaluate ▸ report.

Simulation and deployment both call :func:`run_round`; only the ``Transport`` differs.
A round takes a ``ServerState`` and returns a new one with a ``RoundReport``; if the round
cannot produce a model it raises ``RoundFailedError`` and the old state stays valid. A
round whose server update is not finite is left out instead (:func:`left_out`): one bad
update fails its round, never the run.

Every random draw comes from the generator kept in ``ServerState.rng_state``, in a fixed
order (the sample, the seeds, a task policy's draws, the broadcast codec's seed, the
secure sum's graph, the strategy's noise, then evaluation's sample and codec seed), so a
run resumed from any round draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np

from fedstream import checks
from fedstream.client.encode import upload_codec, upload_mask
from fedstream.client.local import shared_part, with_shared
from fedstream.compression.codecs import decode_broadcast
from fedstream.compression.pruning import prune
from fedstream.errors import ClientFailure, NonFiniteModelError
from fedstream.rounds.aggregate import (
    Aggregated,
    aggregate_updates,
    aggregation_for,
    check_composable,
)
from fedstream.rounds.broadcast import broadcast_params
from fedstream.rounds.collect import Collected, collect_updates, lower_median
from fedstream.rounds.config import RoundConfig
from fedstream.rounds.evaluate import (
    NO_EVALUATION,
    CentralEvaluate,
    evaluate_model,
    summed_metrics,
    weighted_mean,
)
from fedstream.rounds.heap import settled_heap
from fedstream.rounds.plan import TaskPolicy, plan_round
from fedstream.strategies.base import Strategy
from fedstream.transport.base import Transport, fit_deliveries
from fedstream.types import RoundReport, ServerState, WeightedSum

log = logging.getLogger("fedstream.rounds")


def server_step(
    state: ServerState,
    strategy: Strategy,
    aggregate: WeightedSum,
    config: RoundConfig,
    rng: np.random.Generator,
    local: Sequence[str] = (),
) -> ServerState:
    """The strategy's update on the aggregate, then pruning if configured. The strategy
    sees only the shared entries (``local`` ones keep their value in the global model). A
    strategy that draws (DP noise) takes the generator where the round left it, in the
    state. A model that is no longer finite fails the round."""
    round_number = state.round + 1
    shared = state.evolve(
        params=shared_part(state.params, local), rng_state=rng.bit_generator.state
    )
    with np.errstate(over="ignore", invalid="ignore"):  # reported below, as a failed round
        new_state = strategy.server_update(shared, aggregate)
    new_state = new_state.evolve(params=with_shared(state.params, new_state.params))
    if not new_state.params.is_finite():
        raise NonFiniteModelError(round_number, "the server update produced NaN or Inf parameters")
    if config.prune_fraction > 0:
        pruned = prune(new_state.params, config.prune_fraction, config.prune_structured)
        new_state = new_state.evolve(params=pruned)
    return new_state


def run_round(
    state: ServerState,
    strategy: Strategy,
    transport: Transport,
    client_ids: Sequence[str],
    config: RoundConfig,
    *,
    evaluate: bool = True,
    central_evaluate: CentralEvaluate | None = None,
    task_policy: TaskPolicy | None = None,
) -> tuple[ServerState, RoundReport]:
    """Run round ``state.round + 1`` and return the new state and its report.

    ``task_policy`` may change or drop tasks after sampling (a simulation's stragglers).
    """
    started = time.perf_counter()
    check_composable(strategy, config)
    rng = state.generator()
    plan = plan_round(state, strategy, client_ids, config, rng, task_policy)
    sent = broadcast_params(strategy.broadcast(state), config.broadcast, rng)
    like = strategy.payload_like(shared_part(state.params, plan.fit.local_entries))
    aggregation = aggregation_for(config, like, strategy, len(plan.tasks))
    on_server = not aggregation.on_clients
    collected = collect_updates(
        fit_deliveries(transport, sent, plan.tasks),
        plan,
        like,
        aggregation.add if on_server else None,
        config.bounds,
        upload_codec(plan.fit),
        upload_mask(decode_broadcast(sent, config.broadcast), plan.fit),
        aggregation.add_block if on_server else None,
    )
    aggregated = (
        aggregate_updates(
            aggregation, transport, collected, config, len(plan.sampled), plan.round, rng
        )
        if plan.sampled
        else Aggregated(WeightedSum(like.map(np.zeros_like), 0.0, 0), collected)
    )  # a Poisson sample may be empty: the round still steps (DP still adds its noise)
    fit_done = time.perf_counter()

    aggregate = replace(aggregated.aggregate, population=len(client_ids))
    try:
        new_state = server_step(state, strategy, aggregate, config, rng, plan.fit.local_entries)
    except NonFiniteModelError as exc:
        return left_out(state, rng, plan.sampled, aggregated.collected, str(exc), started)
    rng = new_state.generator()
    update_done = time.perf_counter()

    evaluation = (
        evaluate_model(
            new_state.params, transport, client_ids, config, plan.round, rng, central_evaluate
        )
        if evaluate
        else NO_EVALUATION
    )
    finished = time.perf_counter()

    outcome = aggregated.collected
    report = RoundReport(
        round=plan.round,
        sampled=plan.sampled,
        completed=outcome.completed,
        failures=outcome.failures + evaluation.failures,
        bytes_down=outcome.bytes_down + evaluation.bytes_down,
        bytes_up=outcome.bytes_up + evaluation.bytes_up,
        times={
            "fit_s": fit_done - started,
            "update_s": update_done - fit_done,
            "evaluate_s": finished - update_done,
            "total_s": finished - started,
        },
        metrics={
            **weighted_mean(outcome.train_metrics, "train_"),
            **summed_metrics(aggregated.aggregate, "train_"),
            **strategy.round_metrics(new_state),
            **evaluation.metrics,
        },
        evaluations=evaluation.per_client,
    )
    return new_state.evolve(round=plan.round, rng_state=rng.bit_generator.state), report


def left_out(
    state: ServerState,
    rng: np.random.Generator,
    sampled: tuple[str, ...],
    collected: Collected,
    reason: str,
    started: float,
) -> tuple[ServerState, RoundReport]:
    """A round whose server update was not finite, left out: the model stays as it was,
    the round counts (so the next one samples afresh), and its report has no completed
    client and a failure naming the largest contribution, the likely culprit."""
    failures = list(collected.failures)
    if collected.pulls:
        pulls = dict(collected.pulls)
        culprit = max(pulls, key=lambda c: pulls[c])
        median = lower_median(list(pulls.values()))
        ratio = f", {pulls[culprit] / median:.3g}× the round's median" if median > 0 else ""
        failures.append(
            ClientFailure(
                culprit,
                "aggregate",
                f"{reason}; the largest contribution was this client's (weight × norm = "
                f"{pulls[culprit]:.6g}{ratio}); the round was left out",
            )
        )
    else:
        failures.append(ClientFailure("*", "aggregate", f"{reason}; the round was left out"))
    log.warning("%s", failures[-1])
    elapsed = time.perf_counter() - started
    report = RoundReport(
        round=state.round + 1,
        sampled=sampled,
        completed=(),
        failures=tuple(failures),
        bytes_down=collected.bytes_down,
        bytes_up=collected.bytes_up,
        times={"fit_s": elapsed, "update_s": 0.0, "evaluate_s": 0.0, "total_s": elapsed},
        metrics={},
    )
    return state.evolve(round=state.round + 1, rng_state=rng.bit_generator.state), report


def evaluates(number: int, until: int, every: int) -> bool:
    """Whether round (or server step) ``number`` evaluates: every ``every`` (0: none but
    the last), and always the last one, ``until``."""
    return number == until or (every > 0 and number % every == 0)


def run_rounds(
    state: ServerState,
    strategy: Strategy,
    transport: Transport,
    client_ids: Sequence[str],
    config: RoundConfig,
    until_round: int,
    central_evaluate: CentralEvaluate | None = None,
    task_policy: TaskPolicy | None = None,
) -> Iterator[tuple[ServerState, RoundReport]]:
    """Run rounds until ``state.round == until_round``, yielding each new state and report.

    Evaluation runs every ``config.evaluate_every`` rounds and always in the last one.
    While the rounds run, the objects alive before them stay out of the garbage
    collector's full passes (``rounds.heap``).
    """
    checks.non_negative_int("rounds", until_round)
    with settled_heap():
        while state.round < until_round:
            evaluate = evaluates(state.round + 1, until_round, config.evaluate_every)
            state, report = run_round(
                state,
                strategy,
                transport,
                client_ids,
                config,
                evaluate=evaluate,
                central_evaluate=central_evaluate,
                task_policy=task_policy,
            )
            yield state, report
