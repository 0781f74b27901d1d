"""Which loop a simulated run steps through, and its simulated time.

``run.mode = "sync"`` runs the round loop; each round, with a clock (``[clock]``), lasts
as long as its slowest completed task and its report gains the run's cumulative
``sim_time_s``. ``run.mode = "async"`` runs the buffered loop (``rounds.buffered``) on the
clock (constant speeds unless ``[clock]`` says otherwise), which reports ``sim_time_s``
itself. Both yield (state, report) per round or server step, so the engine checkpoints,
records and publishes them alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from fedstream.errors import ConfigError
from fedstream.rounds import RoundConfig, run_rounds
from fedstream.rounds.buffered import run_buffered
from fedstream.simulation.clock import CLOCK_STREAM, DeviceClock, draw_speeds
from fedstream.simulation.config import SimulationConfig
from fedstream.transport.base import Transport
from fedstream.types import RoundReport, ServerState

if TYPE_CHECKING:
    from fedstream.simulation.engine import Setup

Steps = Iterator[tuple[ServerState, RoundReport]]


def device_clock(config: SimulationConfig, setup: Setup) -> DeviceClock | None:
    """The simulated devices' clock ``config.clock`` describes (constant speeds for an
    asynchronous run without one), or ``None`` for a synchronous run without one."""
    settings = config.clock
    kind = settings.speeds
    if kind == "none":
        if config.run.mode == "sync":
            return None
        kind = "constant"
    ids = sorted(setup.dataset.clients)
    rng = np.random.default_rng([config.execution.seed, CLOCK_STREAM])
    speeds = draw_speeds(
        ids, kind, settings.seconds_per_example, rng, settings.speed_sigma, settings.speed_shape
    )
    sizes = {c: setup.dataset.clients[c].num_train for c in ids}
    return DeviceClock(speeds, sizes, settings.latency_s)


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
    ``elapsed`` is the simulated time already spent (a resumed run's)."""
    strategy = config.build_strategy()
    if config.run.mode == "async":
        assert clock is not None
        return run_buffered(
            state,
            strategy,
            transport,
            client_ids,
            rounds,
            config.asynchronous.buffer_config(),
            clock,
            config.run.rounds,
            setup.central_evaluate,
        )
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
    return steps if clock is None else timed(steps, clock, config.client.local_epochs, elapsed)


def timed(steps: Steps, clock: DeviceClock, epochs: int, elapsed: float) -> Steps:
    """Synchronous rounds with the cumulative simulated time each ends at
    (``sim_time_s``): a round lasts as long as its slowest completed task."""
    for state, report in steps:
        elapsed += clock.round_seconds(report.completed, epochs)
        yield state, replace(report, metrics={**report.metrics, "sim_time_s": elapsed})


def check_async_run(config: SimulationConfig, resume: bool, deployed: bool) -> None:
    """What an asynchronous simulation cannot do yet, refused before it starts."""
    if config.run.mode != "async":
        return
    if resume:
        raise ConfigError(
            "resume",
            True,
            "a new run with run.mode='async' (its in-flight tasks and buffer are not "
            "checkpointed yet)",
        )
    if deployed:
        raise ConfigError(
            "run.mode",
            "async",
            "'sync' in a deployment (the asynchronous gRPC server is not built yet)",
        )
