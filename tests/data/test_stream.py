"""Client data arriving over time: arrival times, the window a task reads, the drifting
concept, and the freshness measure, each worked out by hand on a tiny stream."""

import numpy as np
import pytest

from fedstream import ConfigError
from fedstream.data.base import ClientData
from fedstream.data.stream import Stream, data_for, freshness
from fedstream.types import RoundReport


def client(n: int, first_label: int = 0) -> ClientData:
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    y = (np.arange(n) + first_label) % 3
    return ClientData(x, y, x[:2], y[:2])


def two_clients() -> Stream:
    """a: 4 examples over 8 s (one every 2 s, from 0); b: 2 examples (at 0 and 4 s). Made
    per test: a module-level one would keep ClientData objects alive that another test
    counts."""
    return Stream({"a": client(4), "b": client(2)}, horizon_s=8.0, window=2)


def report(time_s: float, data_times: dict[str, float]) -> RoundReport:
    return RoundReport(
        1, (), tuple(data_times), (), 0, 0, {}, {"sim_time_s": time_s}, {}, data_times
    )


def test_examples_arrive_evenly_and_a_task_reads_the_newest_window():
    stream = two_clients()
    assert stream.arrivals("a").tolist() == [0.0, 2.0, 4.0, 6.0]
    assert [stream.arrived("a", t) for t in (0.0, 1.9, 2.0, 5.0, 100.0)] == [1, 1, 2, 3, 4]
    window = stream.window_at("a", 5.0)  # arrived: 0, 1, 2; the newest two
    assert window.x_train[:, 0].tolist() == [1.0, 2.0]
    assert stream.covered("a", 5.0) == range(1, 3)
    assert data_for(stream.clients, stream, "a", 0.0).num_train == 1
    assert data_for(stream.clients, None, "a", 0.0).num_train == 4  # no stream: all of it
    assert data_for(stream.clients, stream, "a", None).num_train == 4  # no time: all of it


def test_after_the_drift_new_examples_and_evaluation_carry_the_shifted_labels():
    drifting = Stream({"a": client(4)}, 8.0, window=4, drift="shift", drift_at_s=4.0, classes=3)
    early = drifting.window_at("a", 3.0)
    assert early.y_train.tolist() == [0, 1] and early.y_test.tolist() == [0, 1]
    late = drifting.window_at("a", 7.0)  # examples at 0, 2 (old concept), 4, 6 (new)
    assert late.y_train.tolist() == [0, 1, (2 + 1) % 3, (0 + 1) % 3]
    assert late.y_test.tolist() == [1, 2]  # evaluated under the concept at 7 s
    with pytest.raises(ConfigError, match=r"^stream\.drift='shift' is invalid"):
        Stream({"a": client(4)}, 8.0, window=2, drift="shift")  # no classes to shift


def test_freshness_is_the_wait_from_arrival_to_the_first_step_serving_a_model_trained_on_it():
    stream = two_clients()
    steps = [
        report(3.0, {"a": 0.5}),  # a's example 0 (arrived 0) served at 3
        report(7.0, {"a": 4.5, "b": 4.5}),  # a's 1, 2 (arrived 2, 4); b's 0, 1 (0, 4)
        report(9.0, {"a": 6.5}),  # a's 2, 3: 2 was served already, 3 (arrived 6) now
    ]
    waited = freshness(stream, steps)
    assert sorted(waited.lags_s.tolist()) == sorted([3.0, 5.0, 3.0, 7.0, 3.0, 3.0])
    assert waited.unserved == 0 and waited.percentile(50) == 3.0
    # stopped after the second step: a's example 3 (arrived 6 ≤ 7) was never served
    assert freshness(stream, steps[:2]).unserved == 1
    assert freshness(stream, []).lags_s.size == 0


def test_a_stream_draws_each_clients_arrival_order_from_the_generator():
    one = Stream.shuffled({"a": client(6)}, np.random.default_rng(0), 6.0, 3)
    two = Stream.shuffled({"a": client(6)}, np.random.default_rng(0), 6.0, 3)
    order = one.clients["a"].x_train[:, 0]
    assert sorted(order.tolist()) == list(range(6)) and order.tolist() != list(range(6))
    assert np.array_equal(order, two.clients["a"].x_train[:, 0])
    # labels travel with their examples
    assert np.array_equal(one.clients["a"].y_train, order.astype(int) % 3)
