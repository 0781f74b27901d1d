"""The buffered asynchronous loop (FedBuff, Nguyen et al. 2022): the same phases as the
round loop, composed around a buffer instead of a round.

Up to ``concurrency`` clients train at once, each from the newest model when it starts.
Whenever one finishes, its update joins the buffer, scaled by its staleness
(``rounds.staleness``), and another client starts; every ``buffer_size`` updates the
server steps, with the strategy's own update, whatever versions they were trained from.
FedAsync is ``buffer_size = 1``. An update older than ``max_staleness`` server steps is
refused and recorded as a failure; a failed client is replaced as a finished one is.
Under client-level DP (``FitConfig.privacy``) a client with an update in the buffer is
not given another task before the step, so no step holds two of its updates: the
strategy's noise at each step is calibrated to one clipped update per client, accounted
without amplification (the buffer holds whoever finished first, not a random sample).

The clients are a ``Fleet`` (``rounds.fleet``): simulated devices on a clock, or real
clients over gRPC. Tasks end in the fleet's time order; every server step reports
``sim_time_s`` (the fleet's seconds: simulated, or wall-clock since the run began), and
how old its updates' data is when the step serves them (``update_age_mean_s``,
``update_age_max_s``: from each task's start, when its client last read its data, to the
step).

Every random draw (who starts, each task's seed, the broadcast codec's seed, the
strategy's noise, evaluation's sample) comes from the generator in ``ServerState``, in the
order the events happen, so a simulated run is reproducible. Each server step yields the
new state and a ``RoundReport`` whose ``round`` is the step's number, so checkpoints,
the run store, serving and the dashboard take it as they take a round.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from fedstream import checks
from fedstream.client.base import FitTask
from fedstream.client.encode import upload_codec, upload_mask
from fedstream.client.local import local_names, shared_part
from fedstream.compression.codecs import decode_broadcast
from fedstream.errors import ClientFailure, ConfigError, NonFiniteModelError, RoundFailedError
from fedstream.params import Params
from fedstream.rounds.aggregate import aggregation_for
from fedstream.rounds.broadcast import broadcast_params
from fedstream.rounds.collect import Collected, collect_updates
from fedstream.rounds.config import RoundConfig
from fedstream.rounds.evaluate import (
    NO_EVALUATION,
    CentralEvaluate,
    evaluate_model,
    summed_metrics,
    weighted_mean,
)
from fedstream.rounds.fleet import Ended, Fleet, Version, lost_task
from fedstream.rounds.loop import evaluates, left_out, server_step
from fedstream.rounds.plan import RoundPlan
from fedstream.rounds.staleness import StalenessRule, staleness_weight
from fedstream.strategies.base import Strategy
from fedstream.transport.base import Transport
from fedstream.types import ClientUpdate, FitConfig, RoundReport, ServerState

ROUND_ALGORITHMS = ("scaffold", "feddyn", "fednova")
"""Client algorithms whose server side assumes a synchronous round (a control variate
or a correction updated from one round's participants, or normalised across them)."""


@dataclass(frozen=True)
class BufferConfig:
    """The buffered loop's settings: a server step every ``buffer_size`` (K) accepted
    updates, at most ``concurrency`` clients training at once, the ``staleness`` weighting,
    and ``max_staleness`` server steps past which an update is refused (``None``: none).
    With ``one_per_step`` (always under DP or a secure sum) a client whose update is in
    the buffer gets no new task before the step."""

    buffer_size: int = 10
    concurrency: int = 20
    staleness: StalenessRule = field(default_factory=StalenessRule)
    max_staleness: int | None = None
    one_per_step: bool = False

    def __post_init__(self) -> None:
        checks.positive_int("buffer_size", self.buffer_size)
        checks.positive_int("concurrency", self.concurrency)
        if self.buffer_size > self.concurrency:
            raise ConfigError(
                "buffer_size",
                self.buffer_size,
                f"at most concurrency ({self.concurrency}): a buffer fills only from clients "
                "training at once",
            )
        if self.max_staleness is not None:
            checks.non_negative_int("max_staleness", self.max_staleness)


@dataclass
class _Since:
    """What happened since the last server step."""

    buffer: list[tuple[ClientUpdate, int]] = field(default_factory=list)
    begun: list[float] = field(default_factory=list)  # each buffered task's start time
    started: list[str] = field(default_factory=list)
    failures: list[ClientFailure] = field(default_factory=list)
    bytes_down: int = 0
    bytes_up: int = 0
    refused_stale: int = 0
    wall: float = field(default_factory=time.perf_counter)


def check_buffered(
    strategy: Strategy, fit: FitConfig, config: RoundConfig, buffer: BufferConfig, clients: int
) -> None:
    """What the buffered loop cannot run, refused before any task is sent, saying why."""
    if buffer.concurrency > clients:
        raise ConfigError(
            "concurrency", buffer.concurrency, f"at most the number of clients ({clients})"
        )
    if config.secure_aggregation is not None:
        scheme = config.secure_aggregation.scheme
        if buffer.staleness.kind != "constant":
            raise ConfigError(
                "staleness",
                buffer.staleness.kind,
                f"'constant' with secure_aggregation={scheme!r} (the server cannot scale an "
                "update it never sees)",
            )
        if buffer.buffer_size < 2:
            raise ConfigError(
                "buffer_size", buffer.buffer_size, f"at least 2 with secure_aggregation={scheme!r}"
            )
    if fit.sample_dp is not None:
        raise ConfigError(
            "privacy.level",
            "sample",
            "'none', 'client' or 'local' in an asynchronous run (DP-SGD's accounting "
            "composes one task per client a round)",
        )
    if fit.algorithm in ROUND_ALGORITHMS:
        raise ConfigError(
            "strategy.name",
            strategy.name,
            "a strategy without round-bound client corrections in an asynchronous run "
            f"({', '.join(ROUND_ALGORITHMS)} assume every step's clients trained from one "
            "model)",
        )


def run_buffered(
    state: ServerState,
    strategy: Strategy,
    transport: Transport,
    client_ids: Sequence[str],
    config: RoundConfig,
    buffer: BufferConfig,
    fleet: Fleet,
    until_step: int,
    central_evaluate: CentralEvaluate | None = None,
) -> Iterator[tuple[ServerState, RoundReport]]:
    """Run server steps until ``state.round == until_step``, yielding each new state and
    its report (module docstring). ``fleet`` reaches the clients; ``transport`` runs the
    evaluations and a secure sum's protocol. Evaluation runs every
    ``config.evaluate_every`` steps and in the last one."""
    checks.non_negative_int("rounds", until_step)
    rng = state.generator()
    ids = list(client_ids)
    versions: dict[int, Version] = {}
    outcomes: dict[str, ClientUpdate | ClientFailure] = {}  # trained, not yet ended
    busy: set[str] = set()
    now = 0.0
    since = _Since()

    def version(current: ServerState, sent: Params, fit: FitConfig) -> Version:
        like = strategy.payload_like(shared_part(current.params, fit.local_entries))
        mask = upload_mask(decode_broadcast(sent, config.broadcast), fit)
        return Version(sent, fit, like, upload_codec(fit), mask)

    def version_of(current: ServerState) -> Version:
        number = current.round + 1
        if number not in versions:
            local = local_names(current.params, config.local_entries)
            fit = strategy.configure_fit(current, replace(config.fit_config(), local_entries=local))
            sent = broadcast_params(strategy.broadcast(current), config.broadcast, rng)
            versions[number] = version(current, sent, fit)
        return versions[number]

    if state.in_flight is not None:  # a resumed run: its work in progress, as it was
        saved = state.in_flight
        now = saved.now
        outcomes.update(saved.outcomes)
        versions.update({n: version(state, p, f) for n, (p, f) in saved.versions.items()})
        busy |= fleet.restore(saved, versions)

    def start_tasks(current: ServerState) -> None:
        # under DP a client whose update waits in the buffer waits too: one update per
        # client per step is what the step's noise is calibrated to; under a secure sum
        # its device holds that update until the step's protocol
        holds_back = (
            buffer.one_per_step
            or first.fit.privacy is not None
            or config.secure_aggregation is not None
        )
        while len(busy) < buffer.concurrency:
            held = {u.client_id for u, _ in since.buffer} if holds_back else set()
            idle = [c for c in ids if c not in busy and c not in held]
            ready = fleet.ready(idle, now) if idle else []
            if not ready:  # the fleet wakes the loop when one can take a task
                return
            client = ready[int(rng.integers(len(ready)))]
            seed = int(rng.integers(0, 2**63 - 1))
            sent = version_of(current)
            task = FitTask(client, current.round + 1, sent.fit.with_seed(seed), data_time=now)
            fleet.start(task, sent, now)
            busy.add(client)
            since.started.append(client)

    def collect(ended: Ended) -> None:
        tasks = ended.trained
        number = tasks[0].round
        sent = versions[number]
        plan = RoundPlan(number, tuple(t.client_id for t in tasks), tasks, sent.fit)
        accepted: dict[str, ClientUpdate] = {}
        collected = collect_updates(
            ended.deliveries,
            plan,
            sent.like,
            None  # a secure sum: the updates stay on the devices until the step
            if config.secure_aggregation is not None
            else lambda update: accepted.__setitem__(update.client_id, update),
            config.bounds,
            sent.codec,
            sent.mask,
        )
        asked = set(plan.sampled)
        outcomes.update({f.client_id: f for f in collected.failures if f.client_id in asked})
        outcomes.update(accepted)
        for (_, metrics), client in zip(collected.train_metrics, collected.completed, strict=True):
            if client not in accepted:  # held on its device: only its metrics came
                outcomes[client] = ClientUpdate(client, number, Params({}), 1.0, metrics)
        since.failures += [f for f in collected.failures if f.client_id not in asked]
        since.bytes_down += collected.bytes_down
        since.bytes_up += collected.bytes_up

    first = version_of(state)
    check_buffered(strategy, first.fit, config, buffer, len(ids))
    start_tasks(state)
    while state.round < until_step:
        ended = fleet.next()
        if ended is None:
            raise RoundFailedError(
                state.round + 1,
                "no client is training and none will be able to",
                tuple(since.failures),
            )
        event = ended.event
        now, task = event.time, event.task
        if task is None:  # a device can take a task
            start_tasks(state)
            continue
        client = task.client_id
        busy.discard(client)
        if not event.completed:
            since.failures.append(lost_task(event))
            start_tasks(state)
            continue
        if ended.trained:
            collect(ended)
        outcome = outcomes.pop(client)
        if not fleet.outstanding(task.round) and task.round <= state.round:
            versions.pop(task.round, None)  # no task still to answer from it
        if isinstance(outcome, ClientFailure):
            since.failures.append(outcome)
        else:
            staleness = state.round + 1 - task.round
            if buffer.max_staleness is not None and staleness > buffer.max_staleness:
                since.refused_stale += 1
                since.failures.append(
                    ClientFailure(
                        client,
                        "validate",
                        f"staleness {staleness} exceeds max_staleness={buffer.max_staleness}: "
                        f"trained from model version {task.round - 1}, the server is at "
                        f"{state.round}",
                    )
                )
            else:
                since.buffer.append((outcome, staleness))
                since.begun.append(event.started)
        if len(since.buffer) >= buffer.buffer_size:
            number = state.round + 1
            evaluate = evaluates(number, until_step, config.evaluate_every)
            state, report, rng = _step(
                state, strategy, transport, ids, config, buffer.staleness, since, now, rng,
                versions[number], evaluate, central_evaluate,
            )  # fmt: skip
            state = state.evolve(in_flight=fleet.in_flight(now, outcomes))
            yield state, report
            since = _Since()
        start_tasks(state)


def _step(
    state: ServerState,
    strategy: Strategy,
    transport: Transport,
    client_ids: Sequence[str],
    config: RoundConfig,
    rule: StalenessRule,
    since: _Since,
    now: float,
    rng: np.random.Generator,
    current: Version,
    evaluate: bool,
    central_evaluate: CentralEvaluate | None,
) -> tuple[ServerState, RoundReport, np.random.Generator]:
    """One server step on the full buffer: the staleness-scaled sum, the strategy's update,
    evaluation, and the step's report (the generator goes on from where it left off)."""
    number = state.round + 1
    stepping = time.perf_counter()
    aggregation = aggregation_for(config, current.like, strategy, len(since.buffer))
    for update, staleness in since.buffer if not aggregation.on_clients else ():
        factor = staleness_weight(staleness, rule)
        aggregation.add(
            update if factor == 1.0 else replace(update, payload=update.payload * factor)
        )
    buffered = tuple(update.client_id for update, _ in since.buffer)
    summed = aggregation.finish(transport, number, buffered, rng)
    completed = tuple(summed.included)
    since.failures += summed.failures
    since.bytes_down += summed.bytes_down
    since.bytes_up += summed.bytes_up
    aggregate = replace(summed.aggregate, population=len(client_ids))
    ages = [age for _, age in since.buffer]
    waited = [now - begun for begun in since.begun]
    clock = {
        "sim_time_s": now,
        "staleness_mean": float(np.mean(ages)),
        "staleness_max": float(max(ages)),
        "refused_stale": float(since.refused_stale),
        "update_age_mean_s": float(np.mean(waited)),
        "update_age_max_s": float(max(waited)),
    }
    try:
        new_state = server_step(state, strategy, aggregate, config, rng, current.fit.local_entries)
    except NonFiniteModelError as exc:
        collected = Collected(
            completed, tuple(since.failures), (), since.bytes_down, since.bytes_up
        )
        kept, report = left_out(state, rng, completed, collected, str(exc), since.wall)
        return kept, replace(report, metrics=clock), kept.generator()
    rng = new_state.generator()
    updated = time.perf_counter()
    evaluation = (
        evaluate_model(
            new_state.params, transport, client_ids, config, number, rng, central_evaluate
        )
        if evaluate
        else NO_EVALUATION
    )
    finished = time.perf_counter()
    pairs = tuple((update.weight, update.metrics) for update, _ in since.buffer)
    starts = zip(since.buffer, since.begun, strict=True)
    read = {update.client_id: begun for (update, _), begun in starts}
    report = RoundReport(
        round=number,
        sampled=tuple(since.started),
        completed=completed,
        failures=tuple(since.failures) + evaluation.failures,
        bytes_down=since.bytes_down + evaluation.bytes_down,
        bytes_up=since.bytes_up + evaluation.bytes_up,
        times={
            "fit_s": stepping - since.wall,
            "update_s": updated - stepping,
            "evaluate_s": finished - updated,
            "total_s": finished - since.wall,
        },
        metrics={
            **weighted_mean(pairs, "train_"),
            **summed_metrics(aggregate, "train_"),
            **strategy.round_metrics(new_state),
            **evaluation.metrics,
            **clock,
        },
        evaluations=evaluation.per_client,
        data_times={client: read[client] for client in completed},
    )
    return new_state.evolve(round=number, rng_state=rng.bit_generator.state), report, rng
