"""The simulated devices' clock: speeds from documented distributions, task durations."""

import numpy as np
import pytest

from fedstream import ConfigError, FitConfig, FitTask
from fedstream.simulation.clock import Availability, DeviceClock, draw_speeds

IDS = [f"client-{i:03d}" for i in range(2000)]


def test_a_task_takes_epochs_times_examples_times_the_devices_speed_plus_latency():
    clock = DeviceClock({"a": 0.01, "b": 0.5}, {"a": 30, "b": 4}, latency_s=2.0)
    task = FitTask("a", 1, FitConfig(local_epochs=5))
    assert clock.seconds(task) == pytest.approx(5 * 30 * 0.01 + 2.0)
    assert clock.client_seconds("b", 2) == pytest.approx(2 * 4 * 0.5 + 2.0)
    # a synchronous round waits for its slowest client
    assert clock.round_seconds(["a", "b"], 5, start=7.0) == pytest.approx(5 * 4 * 0.5 + 2.0)
    assert clock.round_seconds([], 5, start=7.0) == 0.0
    assert clock.task_end("a", 5, 7.0) == (pytest.approx(7.0 + 3.5), True)  # always online


def test_speeds_keep_their_mean_and_the_heavy_tailed_ones_spread_out():
    rng = np.random.default_rng(0)
    constant = draw_speeds(IDS, "constant", 0.02, rng)
    assert set(constant.values()) == {0.02}
    lognormal = np.array(list(draw_speeds(IDS, "lognormal", 0.02, rng, sigma=1.0).values()))
    pareto = np.array(list(draw_speeds(IDS, "pareto", 0.02, rng, shape=3.0).values()))
    assert lognormal.mean() == pytest.approx(0.02, rel=0.1)
    assert pareto.mean() == pytest.approx(0.02, rel=0.1)
    # σ = 1: the 99th percentile is about e^(2.33 - 0) ≈ 10× the median
    assert 7 < np.quantile(lognormal, 0.99) / np.median(lognormal) < 14
    assert pareto.min() >= 0.02 * 2 / 3 - 1e-12  # the Pareto's scale x_m = mean·(α−1)/α


def test_the_same_seed_draws_the_same_speeds_in_client_order_whatever_order_given():
    one = draw_speeds(IDS[:50], "lognormal", 0.01, np.random.default_rng(7))
    two = draw_speeds(IDS[:50][::-1], "lognormal", 0.01, np.random.default_rng(7))
    assert one == two


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("uniform", 0.01), r"^clock\.speeds='uniform' is invalid: expected one of"),
        (("constant", 0.0), r"^clock\.seconds_per_example=0\.0 is invalid: expected a finite"),
        (("pareto", 0.01, 1.0, 1.0), r"^clock\.speed_shape=1\.0 is invalid: expected a number > 1"),
    ],
)
def test_bad_clock_settings_are_named(args, message):
    kind, mean, *rest = args
    sigma, shape = rest or (1.0, 1.5)
    with pytest.raises(ConfigError, match=message):
        draw_speeds(IDS[:3], kind, mean, np.random.default_rng(0), sigma, shape)


def test_exponential_availability_is_online_its_share_of_the_time_and_consistent():
    online = Availability.exponential(IDS, online_s=30.0, offline_s=90.0, seed=3)
    # stationary from the start: about a quarter of the devices online at any time
    for t in (0.0, 500.0, 5000.0):
        share = np.mean([online.next_online(c, t) == t for c in IDS])
        assert share == pytest.approx(0.25, abs=0.04)
    for client in IDS[:50]:
        t = online.next_online(client, 100.0)
        end = online.online_until(client, t)
        assert t >= 100.0 and end > t  # online from t until end …
        assert online.next_online(client, (t + end) / 2) == (t + end) / 2
        assert online.next_online(client, end) > end  # … then offline for a while
        assert online.online_until(client, end) == end
    # mean online period ≈ 30 s
    lengths = []
    for client in IDS[:200]:
        t = online.next_online(client, 1000.0)
        lengths.append(online.online_until(client, t) - t)
    assert np.mean(lengths) == pytest.approx(30.0, rel=0.2)


def test_the_same_seed_draws_the_same_availability_whatever_order_it_is_asked_in():
    one = Availability.exponential(IDS[:20], 10.0, 10.0, seed=1)
    two = Availability.exponential(IDS[:20], 10.0, 10.0, seed=1)
    late = [two.next_online(c, 900.0) for c in reversed(IDS[:20])][::-1]
    early = [one.next_online(c, 5.0) for c in IDS[:20]]
    assert [one.next_online(c, 900.0) for c in IDS[:20]] == late
    assert [two.next_online(c, 5.0) for c in IDS[:20]] == early


def test_a_task_is_lost_when_its_device_goes_offline_before_it_ends():
    trace = Availability.from_trace({"a": [[0, 10], [20, 100]], "b": [[5, 6]]}, ["a", "b"])
    clock = DeviceClock({"a": 1.0, "b": 1.0}, {"a": 4, "b": 4}, availability=trace)
    assert clock.next_online("a", 12.0) == 20.0 and clock.online_until("a", 3.0) == 10.0
    assert clock.task_end("a", 2, 1.0) == (9.0, True)  # 8 s of work within [0, 10]
    assert clock.task_end("a", 2, 5.0) == (10.0, False)  # offline at 10, the work lost
    assert clock.next_online("b", 7.0) == float("inf")  # never online again
    # a round started at 5 waits for a's 8 s and b's loss at 6
    assert clock.round_seconds(["a", "b"], 2, start=5.0) == 5.0


@pytest.mark.parametrize(
    ("trace", "message"),
    [
        ({"a": [[0, 10]]}, r"^clock\.trace=\['b'\] is invalid: expected online intervals for"),
        (
            {"a": [[0, 10]], "b": [[5, 3]]},
            r"^clock\.trace\['b'\]=\[5, 3\] is invalid: expected sorted",
        ),
        ({"a": [[0, 10], [8, 12]], "b": []}, r"^clock\.trace\['a'\]=\[8, 12\] is invalid"),
    ],
)
def test_a_bad_trace_is_named(trace, message):
    with pytest.raises(ConfigError, match=message):
        Availability.from_trace(trace, ["a", "b"])
