"""The discrete Gaussian's edges: its error messages, its grid and σ pinned, shapes kept,
and the simulated devices' secret pinned (so a change to how it is derived is seen)."""

import numpy as np
import pytest

from fedstream import ConfigError, Params
from fedstream.privacy import discrete_gaussian, discrete_gaussian_release
from fedstream.privacy.mechanisms import GRID_BITS, device_secret, grid_sigma, grid_step


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: discrete_gaussian(0.0, 3, np.random.default_rng(0)),
            r"^sigma=0\.0 is invalid: expected a finite number > 0$",
        ),
        (
            lambda: discrete_gaussian_release(1.0, 0.0, 1.0, np.random.default_rng(0)),
            r"^noise_multiplier=0\.0 is invalid: expected a finite number > 0$",
        ),
        (
            lambda: discrete_gaussian_release(1.0, 1.0, -2.0, np.random.default_rng(0)),
            r"^sensitivity=-2\.0 is invalid: expected a finite number > 0$",
        ),
    ],
)
def test_each_bad_setting_is_named(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_the_grid_and_the_integer_noise_follow_the_bound():
    assert GRID_BITS == 40
    # γ = z·Δ / 2^40 = 6 / 2^40; σ = z·(Δ/γ + √d) = 2·(2^39 + 4) = 2^40 + 8
    assert grid_step(2.0, 3.0) == 6 / 2**40
    assert grid_sigma(2.0, 3.0, 16) == 2**40 + 8
    assert grid_sigma(2.0, 3.0, 1) == 2**40 + 2


def test_a_release_keeps_the_shape_of_what_it_releases():
    rng = np.random.default_rng(0)
    matrix = np.arange(6, dtype=np.float64).reshape(2, 3)
    released = discrete_gaussian_release(matrix, 1.0, 1.0, rng)
    assert released.shape == (2, 3)
    params = Params({"w": np.zeros((3, 4), np.float32), "b": np.zeros(2, np.float32)})
    noisy = discrete_gaussian_release(params, 1.0, 1.0, rng)
    assert noisy["w"].shape == (3, 4) and noisy["b"].shape == (2,)
    assert 0.3 < float(np.std(noisy.flat())) < 3.0  # noise of multiplier 1 at Δ = 1


def test_the_device_secret_is_pinned_and_128_bits_wide():
    # a change to how it is derived changes every simulated device's noise seeds
    assert device_secret(0) == 230707113227050996189508583463985551376
    assert device_secret(7) == 0xBF54A4B5317268A98A91CAD3BF56066C
    assert device_secret(0) >= 2**64 and device_secret(7) >= 2**64
