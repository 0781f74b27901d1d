"""Which loop a simulated run steps through, and its simulated time.

``run.mode = "sync"`` runs the round loop; with a clock (``[clock]``) a sampled client
offline at the round's start, or going offline during its task, fails, each round lasts
until its last task ended or was lost, and its report gains the run's cumulative
``sim_time_s`` (and the round's length as ``update_age_*_s``: every update's data is that
old when the round's model is served).

``run.mode = "async"`` runs the buffered loop (``rounds.buffered``) on the clock
(constant speeds unless ``[clock]`` says otherwise), which reports ``sim_time_s`` itself.
Both yield (state, report) per round or server step, so the engine checkpoints,
records and publishes them alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from fedstream import checks
from fedstream.client.base import FitTask
from fedstream.data.base import ClientData
from fedstream.data.stream import Stream
from fedstream.errors import ClientFailure, ConfigError
from fedstream.rounds import RoundConfig, run_round, run_rounds
from fedstream.rounds.buffered import run_buffered
from fedstream.rounds.fleet import Fleet, LiveTransport, SimulatedFleet
from fedstream.rounds.heap import settled
from fedstream.rounds.loop import evaluates
from fedstream.rounds.plan import TaskPolicy
from fedstream.simulation.clock import (
    CLOCK_STREAM,
    Availability,
    DeviceClock,
    draw_speeds,
    read_trace,
)
from fedstream.simulation.config import SimulationConfig
from fedstream.strategies.base import Strategy
from fedstream.transport.base import Transport
from fedstream.types import RoundReport, ServerState

if TYPE_CHECKING:
    from fedstream.simulation.engine import Setup

Steps = Iterator[tuple[ServerState, RoundReport]]


def device_clock(config: SimulationConfig, setup: Setup) -> DeviceClock | None:
    """The simulated devices' clock ``config.clock`` describes (constant speeds for an
    asynchronous run or one with availability but no speeds), or ``None`` for a
    synchronous run without one. A trace file's entries take the place of the draws."""
    settings = config.clock
    timed = settings.online_s > 0 or settings.trace is not None
    kind = settings.speeds
    if kind == "none":
        if config.run.mode == "sync" and not timed:
            return None
        kind = "constant"
    ids = sorted(setup.dataset.clients)
    trace = read_trace(settings.trace) if settings.trace is not None else {}
    rng = np.random.default_rng([config.execution.seed, CLOCK_STREAM])
    speeds = draw_speeds(
        ids, kind, settings.seconds_per_example, rng, settings.speed_sigma, settings.speed_shape
    )
    for client in ids:
        given = trace.get(client, {}).get("seconds_per_example")
        if given is not None:
            checks.positive(f"clock.trace[{client!r}].seconds_per_example", given)
            speeds[client] = float(given)
    availability = None
    if any("online" in entry for entry in trace.values()):
        online = {c: entry.get("online") for c, entry in trace.items() if "online" in entry}
        availability = Availability.from_trace(online, ids)
    elif settings.online_s > 0:
        availability = Availability.exponential(
            ids, settings.online_s, settings.offline_s, config.execution.seed
        )
    sizes = {c: setup.dataset.clients[c].num_train for c in ids}
    return DeviceClock(speeds, sizes, settings.latency_s, availability)


def server_steps(
    config: SimulationConfig,
    setup: Setup,
    state: ServerState,
    transport: Transport,
    client_ids: Sequence[str],
    rounds: RoundConfig,
    clock: DeviceClock | None,
    elapsed: float,
) -> Steps:
    """The run's (state, report) per round or server step, until ``config.run.rounds``;
    ``elapsed`` is the simulated time already spent (a resumed run's). With a stream each
    report gains ``stream_accuracy`` (``with_stream_accuracy``)."""
    strategy = config.build_strategy()
    if config.run.mode == "async":
        steps: Steps = run_buffered(
            state,
            strategy,
            transport,
            client_ids,
            rounds,
            config.asynchronous.buffer_config(),
            SimulatedFleet(transport, clock) if clock is not None else live_fleet(transport),
            config.run.rounds,
            setup.central_evaluate,
        )
    elif clock is None:
        steps = run_rounds(
            state,
            strategy,
            transport,
            client_ids,
            rounds,
            config.run.rounds,
            setup.central_evaluate,
            config.task_policy(),
        )
    else:
        steps = timed_rounds(
            state, strategy, transport, client_ids, rounds, config, setup, clock, elapsed
        )
    if setup.stream is not None and len(setup.dataset.x_heldout):
        steps = with_stream_accuracy(steps, setup.stream, setup)
    return settled(steps)  # every loop, the asynchronous and timed ones too (rounds.heap)


def with_stream_accuracy(steps: Steps, stream: Stream, setup: Setup) -> Steps:
    """Each step's served model evaluated on the held-out examples as the drifting
    concept labels them at the step's simulated time (``stream_accuracy``,
    ``stream_loss``): how well the served model follows the stream."""
    x, y = setup.dataset.x_heldout, setup.dataset.y_heldout
    for state, report in steps:
        now = report.metrics["sim_time_s"]
        labels = stream.labels_at(y, np.full(len(y), now))
        heldout = ClientData(x[:0], labels[:0], x, labels)
        metrics = setup.trainer.evaluate(state.params, "server", 0, heldout).metrics
        scored = {f"stream_{k}": v for k, v in metrics.items() if k in ("accuracy", "loss")}
        yield state, replace(report, metrics={**report.metrics, **scored})


def timed_rounds(
    state: ServerState,
    strategy: Strategy,
    transport: Transport,
    client_ids: Sequence[str],
    rounds: RoundConfig,
    config: SimulationConfig,
    setup: Setup,
    clock: DeviceClock,
    elapsed: float,
) -> Steps:
    """Synchronous rounds on the clock: a sampled client whose device is offline when the
    round starts, or goes offline before its task ends, fails (``OnClock``); the round
    lasts until its last task ended or was lost, and its report carries the cumulative
    simulated time (``sim_time_s``)."""
    until, epochs = config.run.rounds, config.client.local_epochs
    stragglers = config.task_policy()
    while state.round < until:
        online = OnClock(clock, elapsed)
        state, report = run_round(
            state,
            strategy,
            transport,
            client_ids,
            rounds,
            evaluate=evaluates(state.round + 1, until, rounds.evaluate_every),
            central_evaluate=setup.central_evaluate,
            task_policy=online if stragglers is None else online.then(stragglers),
        )
        took = clock.round_seconds(report.sampled, epochs, elapsed)
        read = dict.fromkeys(report.completed, elapsed)
        elapsed += took
        timing = {"sim_time_s": elapsed, "update_age_mean_s": took, "update_age_max_s": took}
        yield state, replace(report, metrics={**report.metrics, **timing}, data_times=read)


@dataclass(frozen=True)
class OnClock:
    """A round's task policy at simulated time ``start``: tasks whose device is offline
    then, or goes offline before the task ends, fail. It draws nothing."""

    clock: DeviceClock
    start: float

    def __call__(
        self, tasks: Sequence[FitTask], rng: np.random.Generator
    ) -> tuple[list[FitTask], list[ClientFailure]]:
        kept: list[FitTask] = []
        failures: list[ClientFailure] = []
        for task in tasks:
            client = task.client_id
            if self.clock.next_online(client, self.start) > self.start:
                failures.append(ClientFailure(client, "train", "offline when the round started"))
                continue
            end, completed = self.clock.task_end(client, task.config.local_epochs, self.start)
            if completed:
                kept.append(replace(task, data_time=self.start))
            else:
                lost = f"went offline {end - self.start:.4g} s into its task; the work is lost"
                failures.append(ClientFailure(client, "train", lost))
        return kept, failures

    def then(self, policy: TaskPolicy) -> TaskPolicy:
        """This policy, then ``policy`` on the tasks it kept."""

        def both(
            tasks: Sequence[FitTask], rng: np.random.Generator
        ) -> tuple[list[FitTask], list[ClientFailure]]:
            kept, failures = self(tasks, rng)
            rest, more = policy(kept, rng)
            return rest, failures + more

        return both


def live_fleet(transport: Transport) -> Fleet:
    """A deployment's clients as the buffered loop reaches them: its transport's fleet
    (``GrpcTransport.fleet``), which sends one task at a time as clients free up."""
    if not isinstance(transport, LiveTransport):
        raise ConfigError(
            "run.mode",
            "async",
            f"'sync' with {type(transport).__name__}: an asynchronous deployment needs a "
            "transport that sends tasks one at a time (gRPC)",
        )
    return transport.fleet()


def check_deployed_clock(config: SimulationConfig) -> None:
    """A deployment runs in its clients' own time: a simulated clock is refused there, and
    a stream needs the asynchronous loop, whose tasks name their start."""
    settings = config.clock
    simulated = {
        "clock.speeds": settings.speeds if settings.speeds != "none" else None,
        "clock.online_s": settings.online_s if settings.online_s > 0 else None,
        "clock.trace": settings.trace,
    }
    for name, value in simulated.items():
        if value is not None:
            raise ConfigError(
                name,
                value,
                "unset in a deployment (the clock simulates devices; deployed clients "
                "train at their own speed and come and go by themselves)",
            )
    if config.stream.window and config.run.mode != "async":
        raise ConfigError(
            "run.mode",
            config.run.mode,
            "'async' with a stream in a deployment (a synchronous round's tasks do not "
            "name when they start, which a streaming client reads its window by)",
        )
