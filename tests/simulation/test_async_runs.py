"""Asynchronous (FedBuff) simulations end to end, and the simulated clock of synchronous
ones: reproducible, comparable at equal simulated time, composing with the trainers,
compression, personal layers and worker processes, and refusing what they cannot run."""

import json

import numpy as np
import pytest

import fedstream
from fedstream import ConfigError
from fedstream.data.stream import freshness
from fedstream.privacy import PrivacyLedger
from fedstream.simulation import build
from fedstream.simulation.timeline import device_clock
from tests.rounds import scripted
from tests.runs import resumed_and_straight
from tests.settings import make_config, nested

ASYNC = {"mode": "async", "rounds": 12, "speeds": "lognormal", "evaluate_every": 4}


def test_an_async_run_steps_on_its_buffer_and_reports_simulated_time_and_staleness():
    result = fedstream.simulate(**nested(**ASYNC))
    times = [r.metrics["sim_time_s"] for r in result.reports]
    assert len(result.reports) == 12 and times == sorted(times) and times[0] > 0
    assert all(len(r.completed) == 10 for r in result.reports)  # buffer_size 10
    assert max(r.metrics["staleness_max"] for r in result.reports) >= 2
    assert [r.round for r in result.reports if "central_accuracy" in r.metrics] == [4, 8, 12]
    assert result.final_metrics["central_accuracy"] == pytest.approx(0.719, abs=1e-3)
    again = fedstream.simulate(**nested(**ASYNC))
    assert again.state.params.bit_equal(result.state.params)
    assert result.description == "fedavg (FedBuff, K = 10) on digits"  # curves.png's title


def test_a_synchronous_round_lasts_as_long_as_its_slowest_completed_client():
    run = {"rounds": 3, "speeds": "lognormal", "latency_s": 0.5, "evaluate_every": 0}
    result = fedstream.simulate(**nested(**run))
    config = make_config(**run)
    clock = device_clock(config, build(config))
    assert clock is not None
    elapsed = 0.0
    for report in result.reports:
        took = max(clock.client_seconds(c, 5) for c in report.completed)
        elapsed += took
        assert report.metrics["sim_time_s"] == pytest.approx(elapsed)
        assert report.metrics["update_age_max_s"] == pytest.approx(took)
    # without a clock a synchronous run has no simulated time
    assert "sim_time_s" not in fedstream.simulate(**nested(rounds=1)).final_metrics


def test_at_equal_simulated_time_the_buffered_loop_is_further_along_under_slow_stragglers():
    # heavy-tailed speeds: each synchronous round waits for its slowest of 20 clients
    sync = fedstream.simulate(**nested(rounds=6, speeds="lognormal", evaluate_every=0))
    budget = sync.final_metrics["sim_time_s"]
    fast = fedstream.simulate(**nested(**ASYNC | {"rounds": 40, "evaluate_every": 0}))
    steps = [r for r in fast.reports if r.metrics["sim_time_s"] <= budget]
    assert len(steps) * 10 > 6 * 20  # more client updates used in the same time


def test_async_runs_compose_with_the_vectorised_trainer_compression_and_personal_layers():
    run = ASYNC | {"rounds": 4, "evaluate_every": 0}
    vectorized = fedstream.simulate(**nested(trainer="vectorized", **run))
    sequential = fedstream.simulate(**nested(trainer="sequential", **run))
    np.testing.assert_allclose(
        vectorized.state.params.flat(), sequential.state.params.flat(), rtol=1e-4, atol=1e-5
    )
    dense = vectorized.reports[0].bytes_up
    sparse = fedstream.simulate(**nested(compression="topk:0.1", **run))
    assert sparse.reports[0].bytes_up < dense / 3
    assert sparse.state.params.is_finite()
    personal = fedstream.simulate(**nested(personal=("4",), **run | {"evaluate_every": 1}))
    assert "fed_personal_accuracy" in personal.final_metrics


def test_an_async_run_folder_records_every_server_step(tmp_path):
    fedstream.simulate(output_dir=tmp_path / "run", **nested(**ASYNC | {"rounds": 3}))
    lines = (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["metrics"]["sim_time_s"] > 0 for line in lines] == [True] * 3
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["config"]["run"]["mode"] == "async"


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"online_s": 30.0, "offline_s": 30.0, "seconds_per_example": 0.2, "personal": ("4",)},
        {"window": 6, "horizon_s": 10.0, "drift": "shift", "drift_at_s": 5.0},
    ],
    ids=["speeds", "availability-fedper", "drifting-stream"],
)
def test_an_async_run_resumes_bit_for_bit_with_its_work_in_progress(tmp_path, changes):
    # each checkpoint holds the tasks still running, the updates trained but not
    # yet arrived and the model versions they started from: a resumed run goes on exactly
    run = ASYNC | {"rounds": 8} | changes
    resumed, straight = resumed_and_straight(tmp_path, run)
    assert resumed.state.params.bit_equal(straight.state.params)
    assert resumed.final_metrics == straight.final_metrics
    assert [r.completed for r in resumed.reports] == [r.completed for r in straight.reports]
    saved = json.loads(
        (tmp_path / "run" / "checkpoints" / "round-000008" / "state.json").read_text()
    )
    assert saved["in_flight"]["events"] and saved["in_flight"]["versions"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dp": "sample"}, r"^privacy\.level='sample' is invalid: expected 'none', 'client'"),
        (
            {"dp": "client", "concurrency": 95},
            r"^asynchronous\.concurrency=95 is invalid: expected at most data\.num_clients - b",
        ),
        (
            {"secure_aggregation": "secagg+"},
            r"^asynchronous\.staleness='polynomial' is invalid: expected 'constant' with secu",
        ),
        ({"strategy": "fednova"}, r"^strategy\.name='fednova' is invalid: expected a strategy"),
        ({"straggler_fraction": 0.5}, r"^client\.straggler_fraction=0\.5 is invalid: expected 0"),
        ({"concurrency": 200}, r"^asynchronous\.concurrency=200 is invalid: expected at most d"),
        ({"buffer_size": 30}, r"^asynchronous\.buffer_size=30 is invalid: expected at most con"),
        ({"max_staleness": -1}, r"^asynchronous\.max_staleness=-1 is invalid: expected an int"),
        ({"mode": "streaming"}, r"^run\.mode='streaming' is invalid: expected one of \['async'"),
        ({"staleness": "exp"}, r"^asynchronous\.staleness='exp' is invalid: expected one of"),
        ({"online_s": 10.0}, r"^clock\.offline_s=0\.0 is invalid: expected a number > 0 with"),
        ({"speeds": "fast"}, r"^clock\.speeds='fast' is invalid: expected one of"),
    ],
)
def test_bad_async_settings_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        make_config(**ASYNC | changes)


def test_a_deployment_refuses_a_simulated_clock_and_a_transport_without_a_fleet():
    def no_transport(setup):
        raise AssertionError("the run should be refused first")

    with pytest.raises(ConfigError, match=r"^clock\.speeds='lognormal' is invalid: expected unset"):
        fedstream.simulate(transport_factory=no_transport, **nested(**ASYNC))
    with pytest.raises(ConfigError, match=r"^run\.mode='async' is invalid: .*sends tasks one at"):
        fedstream.simulate(
            transport_factory=lambda setup: scripted.transport(), **nested(mode="async", rounds=1)
        )


@pytest.mark.slow  # worker processes
def test_an_async_run_in_worker_processes_is_the_in_process_run():
    run = ASYNC | {"rounds": 4, "evaluate_every": 0, "personal": ("4",)}
    alone = fedstream.simulate(**nested(**run))
    workers = fedstream.simulate(**nested(executor="processes", workers=2, **run))
    assert workers.state.params.bit_equal(alone.state.params)


def test_devices_that_come_and_go_lose_their_work_in_both_loops():
    # online 60 s, offline 60 s on average; a task of 5 epochs takes about 5·14·0.01·t s
    run = {"online_s": 60.0, "offline_s": 60.0, "seconds_per_example": 0.5, "evaluate_every": 0}
    fast = fedstream.simulate(**nested(**ASYNC | run | {"rounds": 8}))
    lost = [f for r in fast.reports for f in r.failures if "went offline" in f.cause]
    assert lost and all(f.stage == "train" for f in lost)
    assert all(len(r.completed) == 10 for r in fast.reports)
    sync = fedstream.simulate(**nested(rounds=4, speeds="lognormal", **run))
    causes = [f.cause for r in sync.reports for f in r.failures]
    assert "offline when the round started" in causes
    assert any("went offline" in c for c in causes)
    assert all(len(r.completed) < 20 for r in sync.reports)  # of 20 sampled
    assert sync.final_metrics["sim_time_s"] > 0


def test_a_trace_file_says_who_is_online_and_how_fast(tmp_path):
    ids = [f"client-{i}" for i in range(10)]
    trace = {c: {"seconds_per_example": 0.01, "online": [[0, 1e9]]} for c in ids}
    trace["client-3"] = {"seconds_per_example": 0.01, "online": []}  # never online
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace))
    run = {"num_clients": 10, "clients_per_round": 5, "trace": str(path), "evaluate_every": 0}
    sync = fedstream.simulate(**nested(rounds=4, **run))
    fast = fedstream.simulate(**nested(mode="async", rounds=4, buffer_size=2, concurrency=5, **run))
    for result in (sync, fast):
        assert all("client-3" not in r.completed for r in result.reports)
    assert all("client-3" not in r.sampled for r in fast.reports)  # never given a task
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"^clock\.trace='.*bad\.json' is invalid: expected a"):
        fedstream.simulate(**nested(rounds=1, **run | {"trace": str(bad)}))


def test_under_client_dp_no_step_holds_two_updates_of_one_client_and_epsilon_has_no_amplification():
    # with very heavy-tailed speeds (σ = 2) the fastest clients finish twice before a
    # buffer of 10 fills; under DP a client with an update in the buffer waits for the step
    run = ASYNC | {"rounds": 10, "evaluate_every": 0, "concurrency": 12, "speed_sigma": 2.0}
    plain = fedstream.simulate(**nested(**run))
    assert any(len(set(r.completed)) < len(r.completed) for r in plain.reports)
    private = fedstream.simulate(**nested(**run, dp="client", dp_noise=0.8, dp_clip=0.5))
    assert all(len(set(r.completed)) == len(r.completed) == 10 for r in private.reports)
    # each step is a Gaussian release over whoever finished: accounted at q = 1 (every
    # client, every step), not amplified by a sampling that did not happen
    assert private.state.accountant["client"].entries == ((0.8, 1.0, 10, 100),)
    expected = PrivacyLedger().record(0.8, 1.0, 10, population=100).epsilon(1e-5)
    assert private.final_metrics["dp_epsilon"] == pytest.approx(expected)
    local = fedstream.simulate(**nested(**run, dp="local", dp_noise=0.8, dp_clip=0.5))
    assert local.state.params.is_finite() and local.final_metrics["dp_epsilon"] > 0


def test_secagg_over_each_buffer_ends_where_the_plain_sum_does():
    # the devices hold their updates until the step's SecAgg+ protocol over the buffer's
    # clients, each trained from whatever version it started on; the plain run with one
    # update per client a step (what a secure sum implies) ends at the same model
    run = ASYNC | {
        "rounds": 4, "evaluate_every": 0, "num_clients": 30, "buffer_size": 6,
        "concurrency": 10, "staleness": "constant",
    }  # fmt: skip
    plain = fedstream.simulate(**nested(**run, one_update_per_step=True))
    secure = fedstream.simulate(**nested(**run, secure_aggregation="secagg+"))
    assert [sorted(r.completed) for r in secure.reports] == [
        sorted(r.completed) for r in plain.reports
    ]
    assert max(r.metrics["staleness_max"] for r in secure.reports) >= 1  # versions mixed
    np.testing.assert_allclose(secure.state.params.flat(), plain.state.params.flat(), atol=1e-6)
    # the server saw masked vectors and the protocol's messages, not the updates
    assert sum(r.bytes_up for r in secure.reports) > sum(r.bytes_up for r in plain.reports)
    with pytest.raises(ConfigError, match=r"^asynchronous\.staleness='polynomial' is invalid: e"):
        make_config(**run | {"staleness": "polynomial"}, secure_aggregation="secagg+")


STREAM = {
    "num_clients": 20, "clients_per_round": 10, "partition": "iid", "local_epochs": 5,
    "speeds": "lognormal", "window": 16, "horizon_s": 200.0, "drift": "shift",
    "drift_at_s": 100.0, "evaluate_every": 0,
}  # fmt: skip


@pytest.mark.parametrize(
    "mode", [{"mode": "sync", "rounds": 40}, {"mode": "async", "rounds": 220}], ids=str
)
def test_the_served_model_follows_a_drifting_stream_and_reports_its_freshness(mode, tmp_path):
    buffered = {"buffer_size": 5, "concurrency": 10} if "async" in mode.values() else {}
    run = STREAM | mode | buffered
    result = fedstream.simulate(output_dir=tmp_path / "run", **nested(**run))
    config = make_config(**run)
    stream = build(config).stream
    assert stream is not None
    served = [(r.metrics["sim_time_s"], r.metrics["stream_accuracy"]) for r in result.reports]
    before = [acc for t, acc in served if 60 <= t < 100]
    just_after = [acc for t, acc in served if 100 <= t < 104]
    # learnt before the drift; the old concept is wrong after it (labels shifted by one)
    assert before and min(before) > 0.6 and just_after and max(just_after) < 0.3
    late = [acc for t, acc in served if t >= 140]
    assert late and max(late) > 0.6  # and it has followed the new concept
    # every update names when its task read its data, and examples wait seconds, not
    # the run's length, for a model trained on them
    assert all(set(r.data_times) == set(r.completed) for r in result.reports)
    waited = freshness(stream, result.reports)
    assert len(waited.lags_s) > 500 and np.all(waited.lags_s > 0)
    assert waited.percentile(50) < 15 and waited.percentile(99) < 60
    written = json.loads((tmp_path / "run" / "results.json").read_text())["data"]["stream"]
    assert written["freshness_p50_s"] == waited.percentile(50) and written["window"] == 16


def test_a_stream_needs_a_clock_the_built_in_data_and_the_clients_in_process():
    with pytest.raises(ConfigError, match=r"^stream\.window=4 is invalid: expected 0 without a"):
        make_config(window=4)
    with pytest.raises(ConfigError, match=r"^execution\.executor='processes' is invalid"):
        make_config(window=4, speeds="constant", executor="processes", workers=2)
    with pytest.raises(ConfigError, match=r"^stream\.drift='shift' is invalid: expected 'none' w"):
        make_config(drift="shift")
    with pytest.raises(ConfigError, match=r"^stream\.drift='shift' is invalid: .*regression"):
        make_config(window=4, speeds="constant", drift="shift", dataset="diabetes")


@pytest.mark.parametrize(
    "run", [ASYNC | {"rounds": 3}, {"rounds": 2, "speeds": "lognormal"}, {"rounds": 2}]
)
def test_every_round_loop_runs_with_the_heap_settled_and_hands_it_back(run):
    # asynchronous steps, timed rounds and plain rounds: each reaches the callbacks with
    # the objects alive at its start frozen (rounds.heap), and unfreezes them at the end
    import gc

    from fedstream.tracking.base import RunCallback

    class Watch(RunCallback):
        def __init__(self):
            self.counts: list[int] = []

        def on_round_end(self, report):
            self.counts.append(gc.get_freeze_count())

    gc.unfreeze()
    watch = Watch()
    fedstream.simulate(**nested(**run), callbacks=[watch])
    assert len(watch.counts) == run["rounds"] and min(watch.counts) > 0
    assert gc.get_freeze_count() == 0
