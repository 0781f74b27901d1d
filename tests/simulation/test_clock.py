"""The simulated devices' clock: speeds from documented distributions, task durations."""

import numpy as np
import pytest

from fedstream import ConfigError, FitConfig, FitTask
from fedstream.simulation.clock import DeviceClock, draw_speeds

IDS = [f"client-{i:03d}" for i in range(2000)]


def test_a_task_takes_epochs_times_examples_times_the_devices_speed_plus_latency():
    clock = DeviceClock({"a": 0.01, "b": 0.5}, {"a": 30, "b": 4}, latency_s=2.0)
    task = FitTask("a", 1, FitConfig(local_epochs=5))
    assert clock.seconds(task) == pytest.approx(5 * 30 * 0.01 + 2.0)
    assert clock.client_seconds("b", 2) == pytest.approx(2 * 4 * 0.5 + 2.0)
    # a synchronous round waits for its slowest completed client
    assert clock.round_seconds(["a", "b"], 5) == pytest.approx(5 * 4 * 0.5 + 2.0)
    assert clock.round_seconds([], 5) == 0.0


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
