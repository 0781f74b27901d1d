"""Executors: persistent worker processes and Ray actors give the in-process results."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedstream
from fedstream.client.base import FitTask, Trainer
from fedstream.data.base import ClientData
from fedstream.errors import ConfigError
from fedstream.params import Params
from fedstream.rounds import run_round
from fedstream.simulation import build
from fedstream.simulation.engine import executor_transport, local_transport
from fedstream.transport.base import StackedDelivery, TransportWrapper
from fedstream.transport.inprocess import InProcessTransport
from fedstream.transport.processes import ProcessTransport, Recipe
from fedstream.transport.sharded import worker_of
from fedstream.types import ClientUpdate, EvaluateResult, FitConfig
from tests.settings import make_config, nested

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # whole runs in fresh processes
SMALL = make_config(
    num_clients=12,
    rounds=3,
    clients_per_round=6,
    local_epochs=1,
    lr=0.1,
    trainer="sequential",
    evaluate_fraction=0.5,
)


def same_run(
    a: fedstream.SimulationResult, b: fedstream.SimulationResult, fresh_keys: bool = False
) -> None:
    """Bit for bit: params, metrics, who took part, and every byte counted. SecAgg+ draws
    fresh keys from the OS in every run, and their encodings vary by a few bytes, so
    with ``fresh_keys`` the byte counts need only agree to 0.1 %."""
    assert a.state.params.bit_equal(b.state.params)
    for left, right in zip(a.reports, b.reports, strict=True):
        assert left.metrics == right.metrics
        assert left.completed == right.completed
        if fresh_keys:
            assert right.bytes_up == pytest.approx(left.bytes_up, rel=1e-3)
            assert right.bytes_down == pytest.approx(left.bytes_down, rel=1e-3)
        else:
            assert (left.bytes_up, left.bytes_down) == (right.bytes_up, right.bytes_down)


def test_worker_processes_end_bit_exact_where_the_in_process_run_does():
    alone = fedstream.simulate(SMALL)
    spread = fedstream.simulate(SMALL, **nested(executor="processes", workers=2))
    same_run(alone, spread)


def test_device_state_stays_with_its_worker_across_rounds():
    """Error feedback keeps a residual per client between rounds, and SecAgg+ keeps keys
    and shares per client between stages: both live in the worker that owns the client."""
    compressed = SMALL.with_changes(
        **nested(compression="topk:0.2", rounds=4, clients_per_round=10)
    )
    same_run(
        fedstream.simulate(compressed),
        fedstream.simulate(compressed, **nested(executor="processes", workers=2)),
    )
    secure = SMALL.with_changes(**nested(secure_aggregation="secagg+", evaluate_fraction=0.0))
    same_run(
        fedstream.simulate(secure),
        fedstream.simulate(secure, **nested(executor="processes", workers=2)),
        fresh_keys=True,
    )


def test_a_resume_puts_each_clients_saved_state_back_in_its_worker(tmp_path: Path):
    compressed = SMALL.with_changes(
        **nested(compression="topk:0.2", rounds=4, clients_per_round=10)
    )
    straight = fedstream.simulate(compressed)
    fedstream.simulate(
        compressed, output_dir=tmp_path / "run", **nested(rounds=2, executor="processes", workers=2)
    )
    resumed = fedstream.simulate(output_dir=tmp_path / "run", resume=True, **nested(rounds=4))
    assert resumed.state.params.bit_equal(straight.state.params)


def test_vectorised_cohorts_split_over_workers_agree_to_rounding():
    config = SMALL.with_changes(**nested(trainer="vectorized", rounds=2))
    alone = fedstream.simulate(config)
    spread = fedstream.simulate(config, **nested(executor="processes", workers=2))
    for name in alone.state.params:
        np.testing.assert_allclose(
            spread.state.params[name], alone.state.params[name], rtol=0, atol=1e-6
        )


def test_worker_processes_hand_over_blocks_that_sum_as_their_rows_do():
    # each worker stacks its plain cohorts (one message a cohort); a wrapper hides
    # fit_stacked, so the same workers then answer one delivery per client
    config = SMALL.with_changes(**nested(trainer="vectorized", executor="processes", workers=2))
    setup = build(config)
    ends = []
    with executor_transport(config) as workers:
        assert workers is not None
        first = list(workers.fit_stacked(setup.initial.params, plan_tasks(setup, 6)))
        assert any(isinstance(d, StackedDelivery) for d in first)
        assert sum(len(d.block) if isinstance(d, StackedDelivery) else 1 for d in first) == 6
        for transport in (workers, TransportWrapper(workers)):
            state, reports = setup.initial, []
            for _ in range(2):
                state, report = run_round(
                    state, config.build_strategy(), transport, sorted(setup.dataset.clients),
                    config.round_config(), evaluate=False,
                )  # fmt: skip
                reports.append((report.completed, report.bytes_up, report.bytes_down))
            ends.append((state.params, reports))
    (stacked, stacked_reports), (alone, alone_reports) = ends
    assert stacked.bit_equal(alone) and stacked_reports == alone_reports


def plan_tasks(setup: Any, count: int) -> list[FitTask]:
    names = sorted(setup.dataset.clients)[:count]
    return [FitTask(n, 1, FitConfig(lr=0.1, seed=k)) for k, n in enumerate(names)]


def counting_recipe(
    config: dict[str, object], log: str, worker: int, workers: int
) -> InProcessTransport:
    with open(log, "a") as out:
        out.write(f"{os.getpid()}\n")
    return local_transport(config, worker, workers)


def test_workers_load_their_data_once_and_live_for_the_whole_run(tmp_path: Path):
    log = tmp_path / "builds.txt"
    config = SMALL.with_changes(**nested(rounds=4))
    setup = build(config)
    recipe = functools.partial(counting_recipe, config.to_dict(), str(log))
    with ProcessTransport(recipe, workers=2) as transport:
        pids = transport.pids
        for _ in fedstream.run_rounds(
            setup.initial,
            config.build_strategy(),
            transport,
            sorted(setup.dataset.clients),
            config.round_config(),
            config.run.rounds,
        ):
            assert transport.pids == pids
    assert sorted(int(line) for line in log.read_text().split()) == sorted(pids)


class DiesOn:
    """A trainer that kills its own process when asked to train one given client."""

    def __init__(self, inner: Trainer, victim: str) -> None:
        self.inner, self.victim = inner, victim

    def fit(self, params: Params, task: FitTask, data: ClientData) -> ClientUpdate:
        if task.client_id == self.victim:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.fit(params, task, data)

    def evaluate(
        self, params: Params, client_id: str, round_number: int, data: ClientData
    ) -> EvaluateResult:
        return self.inner.evaluate(params, client_id, round_number, data)


def dying_recipe(
    config: dict[str, object], victim: str, worker: int, workers: int
) -> InProcessTransport:
    transport = local_transport(config, worker, workers)
    return InProcessTransport(transport.clients, DiesOn(transport.trainer, victim))


def check_a_dying_worker(make: Callable[[Recipe], Any], dead: int, cause: str) -> None:
    """Worker ``dead`` of two kills itself while training: every client is still
    answered, exactly that worker's clients fail with ``cause``, and the next call runs
    on a new worker in its place while the other one lives on."""
    setup = build(SMALL)
    ids = sorted(setup.dataset.clients)
    victim = next(c for c in ids if worker_of(c, 2) == dead)
    tasks = [FitTask(c, 1, FitConfig(seed=i)) for i, c in enumerate(ids)]
    with make(functools.partial(dying_recipe, SMALL.to_dict(), victim)) as transport:
        first_pids = transport.pids
        answers = {d.client_id: d.result for d in transport.fit(setup.initial.params, tasks)}
        assert sorted(answers) == ids  # every client answered or failed, none lost
        failed = {c: r for c, r in answers.items() if isinstance(r, fedstream.ClientFailure)}
        assert set(failed) == {c for c in ids if worker_of(c, 2) == dead}
        assert cause in failed[victim].cause
        healthy = [t for t in tasks if t.client_id != victim]
        again = list(transport.fit(setup.initial.params, healthy))
        assert all(isinstance(d.result, ClientUpdate) for d in again)
        replaced = [now != before for now, before in zip(transport.pids, first_pids, strict=True)]
        assert replaced == [i == dead for i in range(2)]


def test_a_worker_killed_mid_round_fails_only_its_clients_and_is_replaced():
    check_a_dying_worker(
        lambda recipe: ProcessTransport(recipe, workers=2),
        dead=0,
        cause="worker process 0 exited (code -9)",
    )


def test_executor_settings_are_checked():
    with pytest.raises(ConfigError, match="workers"):
        SMALL.with_changes(**nested(workers=0))
    with pytest.raises(ConfigError, match="executor"):
        SMALL.with_changes(**nested(executor="threads"))
    with pytest.raises(ConfigError, match=r"ray_address.*executor='ray'"):
        SMALL.with_changes(**nested(ray_address="ray://head:10001"))


def in_private_network(namespace: str, body: str) -> None:
    """Run this module's function ``body`` in a fresh Python inside ``namespace``: Ray's
    daemons listen on every interface, so its tests start it where only loopback
    exists. PYTHONPATH lets Ray's workers import this module's recipes too."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, sys.executable, "-c",
         f"from tests.transport import test_executors; test_executors.{body}()"],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


@pytest.mark.ray
def test_ray_actors_end_bit_exact_where_the_in_process_run_does(loopback_only: str):
    in_private_network(loopback_only, "ray_run_matches_in_process")


def ray_run_matches_in_process() -> None:
    alone = fedstream.simulate(SMALL)
    on_ray = fedstream.simulate(SMALL, **nested(executor="ray", workers=2))
    same_run(alone, on_ray)
    # the asynchronous loop over the same actors: its lazily trained cohorts too
    buffered = SMALL.with_changes(
        **nested(mode="async", speeds="lognormal", buffer_size=3, concurrency=6, rounds=4)
    )
    same_run(
        fedstream.simulate(buffered),
        fedstream.simulate(buffered, **nested(executor="ray", workers=2)),
    )
    # each actor's clients' states are checkpointed and put back in the actors on resume
    import tempfile

    compressed = SMALL.with_changes(**nested(compression="topk:0.2", rounds=4))
    straight = fedstream.simulate(compressed)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        on_actors = compressed.with_changes(**nested(executor="ray", workers=2, rounds=2))
        fedstream.simulate(on_actors, output_dir=out)
        resumed = fedstream.simulate(output_dir=out, resume=True, run={"rounds": 4})
    assert resumed.state.params.bit_equal(straight.state.params)


@pytest.mark.ray
def test_a_ray_actor_that_dies_fails_only_its_clients_and_is_replaced(loopback_only: str):
    in_private_network(loopback_only, "ray_actor_dies")


def ray_actor_dies() -> None:
    from fedstream.transport.ray import RayTransport

    check_a_dying_worker(
        lambda recipe: RayTransport(recipe, workers=2), dead=1, cause="Ray actor 1 failed"
    )


def test_a_worker_keeps_only_its_own_clients_rows():
    full = build(SMALL).dataset.clients
    for worker in range(3):
        share = local_transport(SMALL.to_dict(), worker, 3).clients
        assert sorted(share) == sorted(c for c in full if worker_of(c, 3) == worker)
        held = sum(share[c].num_train + share[c].num_test for c in share)
        assert len(share.x) == held  # type: ignore[attr-defined]
        for client_id in share:
            mine, theirs = share[client_id], full[client_id]
            assert np.array_equal(mine.x_train, theirs.x_train)
            assert np.array_equal(mine.y_test, theirs.y_test)
