"""The buffered asynchronous loop (FedBuff): events in simulated-time order, staleness
weighting, refusals, and what it cannot run with; on scripted clients whose updates are
known, so every number can be worked out by hand."""

from dataclasses import replace

import numpy as np
import pytest

from fedstream import ClientUpdate, ConfigError, FedAvg, RoundConfig, ServerState
from fedstream.rounds.buffered import BufferConfig, run_buffered
from fedstream.rounds.fleet import SimulatedFleet
from fedstream.rounds.staleness import StalenessRule
from fedstream.secure.secagg import SecAggConfig
from fedstream.strategies import make_strategy
from tests.rounds.scripted import CLIENTS, GLOBAL, transport


class Durations:
    """A clock where client k's every task takes ``seconds[k]``."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds_of = seconds

    def next_online(self, client_id: str, now: float) -> float:
        return now

    def task_end(self, client_id: str, epochs: int, start: float) -> tuple[float, bool]:
        return start + self.seconds_of[client_id], True


# client ck takes k + 1 seconds; with every client training at once (concurrency 6 of 6),
# whoever finishes is the only one idle, so the schedule is fixed whatever the draws
STAGGERED = Durations({c: float(int(c[1:]) + 1) for c in CLIENTS})
SETTINGS = RoundConfig(evaluate_every=0)


def steps(count, buffer=None, clock=STAGGERED, strategy=None, clients=None, **changes):
    clients = clients or transport()
    buffer = buffer or BufferConfig(buffer_size=3, concurrency=6, **changes)
    state = ServerState.initial(GLOBAL, seed=0)
    return list(
        run_buffered(
            state,
            strategy or FedAvg(),
            clients,
            CLIENTS,
            SETTINGS,
            buffer,
            SimulatedFleet(clients, clock),
            count,
        )
    )


def test_each_step_is_the_mean_of_its_buffer_with_stale_updates_scaled_down():
    # client k sends Δ = k + 1 everywhere at weight k + 1. t=1: c0; t=2: c1, then c0 again
    # (restarted at t=1, still on version 0): step 1 = (1·1 + 2·2 + 1·1) / 4 = 1.5.
    # t=3: c2 (from version 0, staleness 1), c0 (from version 1, fresh); t=4: c3
    # (staleness 1): step 2 = (3·3/√2 + 1·1 + 4·4/√2) / 8 with FedBuff's (1 + s)^-0.5
    (one, first), (two, second) = steps(2)
    assert one.params["w"].tolist() == pytest.approx([2.5, 3.5])
    expected = (9 * 2**-0.5 + 1 + 16 * 2**-0.5) / 8
    assert two.params["w"].tolist() == pytest.approx([2.5 + expected, 3.5 + expected])
    assert first.completed == ("c0", "c1", "c0")
    assert second.completed == ("c2", "c0", "c3")
    assert first.metrics["sim_time_s"] == 2.0 and second.metrics["sim_time_s"] == 4.0
    assert first.metrics["staleness_max"] == 0.0
    assert second.metrics["staleness_mean"] == pytest.approx(2 / 3)
    assert second.metrics["staleness_max"] == 1.0
    # how old each update's data is when its step serves it: c0, c1 began at t=0 and c0
    # again at t=1, served at t=2; c2 and c3 began at 0 and c0 at 2, served at 4
    assert first.metrics["update_age_mean_s"] == pytest.approx(5 / 3)
    assert first.metrics["update_age_max_s"] == 2.0
    assert second.metrics["update_age_mean_s"] == pytest.approx(10 / 3)
    assert second.metrics["update_age_max_s"] == 4.0
    # without the weighting, the stale updates count fully: (9 + 1 + 16) / 8
    (_, _), (constant, _) = steps(2, staleness=StalenessRule("constant"))
    assert constant.params["w"][0] == pytest.approx(2.5 + 26 / 8)
    assert one.round == 1 and two.round == 2


def test_fedasync_steps_on_every_update():
    reports = [report for _, report in steps(5, BufferConfig(buffer_size=1, concurrency=6))]
    assert [len(r.completed) for r in reports] == [1] * 5
    # c0 finishes at t=1, 2, 3 …, c1 at t=2, 4 …: the first five events
    assert [r.completed for r in reports] == [("c0",), ("c1",), ("c0",), ("c2",), ("c0",)]
    assert [r.metrics["sim_time_s"] for r in reports] == [1.0, 2.0, 2.0, 3.0, 3.0]


def test_updates_staler_than_the_bound_are_refused_and_recorded_and_the_loop_goes_on():
    results = steps(4, max_staleness=0)
    refused = [f for _, r in results for f in r.failures]
    assert sum(r.metrics["refused_stale"] for _, r in results) == len(refused) > 0
    assert all(f.stage == "validate" for f in refused)
    assert refused[0].cause.startswith(
        "staleness 1 exceeds max_staleness=0: trained from model version 0, the server is at 1"
    )
    assert all(r.metrics["staleness_max"] == 0.0 for _, r in results)
    assert results[-1][0].round == 4


def test_a_client_answering_for_a_version_it_was_not_sent_is_refused_and_the_loop_goes_on():
    def claims_a_later_version(update: ClientUpdate) -> ClientUpdate:
        return replace(update, round=update.round + 1)

    results = steps(3, clients=transport(c1=claims_a_later_version))
    failures = [f for _, r in results for f in r.failures]
    assert failures and {f.client_id for f in failures} == {"c1"}
    assert failures[0].cause == "update is for round 2, expected round 1"
    assert all("c1" not in r.completed for _, r in results)
    assert results[-1][0].round == 3


def test_a_run_is_reproducible_and_its_draws_decide_who_starts():
    equal = Durations(dict.fromkeys(CLIENTS, 1.0))
    buffer = BufferConfig(buffer_size=2, concurrency=3)
    one = steps(4, buffer, equal)
    two = steps(4, buffer, equal)
    assert [r.sampled for _, r in one] == [r.sampled for _, r in two]
    assert one[-1][0].params.bit_equal(two[-1][0].params)
    # three of six train at once, chosen by the server's generator: not always the same
    assert len({c for _, r in one for c in r.sampled}) > 3


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: BufferConfig(buffer_size=7, concurrency=6),
            r"^buffer_size=7 is invalid: expected at most concurrency \(6\)",
        ),
        (lambda: BufferConfig(buffer_size=0), r"^buffer_size=0 is invalid: expected an integer"),
        (lambda: BufferConfig(max_staleness=-1), r"^max_staleness=-1 is invalid: expected an int"),
        (
            lambda: steps(1, BufferConfig(buffer_size=2, concurrency=7)),
            r"^concurrency=7 is invalid: expected at most the number of clients \(6\)",
        ),
    ],
)
def test_bad_buffer_settings_are_named(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_what_the_loop_cannot_run_with_is_refused_before_any_task_is_sent():
    buffer = BufferConfig(buffer_size=2, concurrency=3)
    state = ServerState.initial(GLOBAL, seed=0)
    secure = replace(SETTINGS, secure_aggregation=SecAggConfig())
    cases = [
        (FedAvg(), secure, r"^staleness='polynomial' is invalid: expected 'constant' with se"),
        (
            make_strategy("scaffold"),
            SETTINGS,
            r"^strategy\.name='scaffold' is invalid: .*round-bound",
        ),
    ]
    asked: list[str] = []

    def records(update: ClientUpdate) -> ClientUpdate:
        asked.append(update.client_id)
        return update

    for strategy, settings, message in cases:
        clients = transport(**dict.fromkeys(CLIENTS, records))
        with pytest.raises(ConfigError, match=message):
            next(
                run_buffered(
                    state,
                    strategy,
                    clients,
                    CLIENTS,
                    settings,
                    buffer,
                    SimulatedFleet(clients, STAGGERED),
                    1,
                )
            )
    assert asked == []  # no client was asked to train
    assert np.array_equal(state.params["w"], GLOBAL["w"])
