import logging
import math

import numpy as np
import pytest

from fedstream import ConfigError, Params
from fedstream.privacy import (
    DEFAULT_ORDERS,
    PrivacyLedger,
    SecureGenerator,
    add_gaussian,
    add_laplace,
    clip_l2,
    discrete_gaussian,
    discrete_gaussian_release,
    gaussian_delta,
    gaussian_sigma_analytic,
    gaussian_sigma_classic,
    laplace_scale,
    rdp_sampled_gaussian,
)
from fedstream.privacy.mechanisms import GRID_BITS


def test_laplace_and_classic_gaussian_calibration():
    assert laplace_scale(2.0, 0.5) == 4.0
    # Δ = 1, ε = 0.5, δ = 1e-5: √(2 ln 125000) / 0.5 = √23.4721 / 0.5 = 9.68961
    assert gaussian_sigma_classic(1.0, 0.5, 1e-5) == pytest.approx(9.689610525, rel=1e-9)
    with pytest.raises(ConfigError, match=r"epsilon=1\.5 is invalid: expected < 1"):
        gaussian_sigma_classic(1.0, 1.5, 1e-5)


def test_analytic_gaussian_is_exact_and_tighter():
    sigma = gaussian_sigma_analytic(1.0, 1.0, 1e-5)
    assert sigma == pytest.approx(3.7306, abs=1e-4)  # Balle & Wang 2018, ε = 1, δ = 1e-5
    assert gaussian_delta(sigma, 1.0, 1.0) == pytest.approx(1e-5, rel=1e-6)
    assert gaussian_delta(sigma * 0.99, 1.0, 1.0) > 1e-5  # it is the smallest such σ
    for eps in (0.1, 0.5, 0.9):
        assert gaussian_sigma_analytic(1.0, eps, 1e-5) < gaussian_sigma_classic(1.0, eps, 1e-5)
    # σ scales linearly with the sensitivity
    assert gaussian_sigma_analytic(3.0, 2.0, 1e-6) == pytest.approx(
        3 * gaussian_sigma_analytic(1.0, 2.0, 1e-6), rel=1e-9
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: laplace_scale(1.0, 0.0), "epsilon=0.0 is invalid: expected a finite number > 0"),
        (lambda: laplace_scale(1.0, -1.0), "epsilon=-1.0 is invalid"),
        (
            lambda: gaussian_sigma_analytic(1.0, 1.0, 0.0),
            r"delta=0.0 is invalid: expected a number in \(0, 1\)",
        ),
        (lambda: gaussian_sigma_analytic(1.0, 1.0, 1.0), "delta=1.0 is invalid"),
        (lambda: clip_l2(Params({"w": np.ones(2)}), 0.0), "clip=0.0 is invalid"),
        (lambda: PrivacyLedger().record(-1.0, 0.1), "noise_multiplier=-1.0 is invalid"),
        (lambda: PrivacyLedger().record(1.0, 1.5), "sampling_rate=1.5 is invalid"),
    ],
)
def test_bad_privacy_parameters_are_named(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_noise_has_the_calibrated_spread_and_leaves_inputs_alone():
    values = np.zeros(200_000)
    gaussian = add_gaussian(values, 2.0, np.random.default_rng(0))
    laplace = add_laplace(values, 3.0, np.random.default_rng(1))
    assert gaussian.std() == pytest.approx(2.0, rel=0.01)
    assert np.abs(laplace).mean() == pytest.approx(3.0, rel=0.01)  # E|Laplace(b)| = b
    assert not values.any()
    params = Params({"w": np.zeros((3, 3), np.float32), "b": np.zeros(3, np.float32)})
    noisy = add_gaussian(params, 1.0, np.random.default_rng(5))
    again = add_gaussian(params, 1.0, np.random.default_rng(5))
    assert noisy.bit_equal(again) and noisy["w"].dtype == np.float32
    assert isinstance(add_laplace(1.0, 1.0, np.random.default_rng(0)), float)


def test_secure_generator_draws_unpredictable_noise_of_the_right_spread():
    secure = SecureGenerator()
    first = secure.normal(0.0, 1.0, (100_000,))
    assert first.std() == pytest.approx(1.0, rel=0.02) and abs(first.mean()) < 0.02
    assert not np.array_equal(first, secure.normal(0.0, 1.0, (100_000,)))
    laplace = secure.laplace(0.0, 2.0, (100_000,))
    assert np.abs(laplace).mean() == pytest.approx(2.0, rel=0.02)
    assert add_gaussian(Params({"w": np.zeros(4)}), 1.0, secure)["w"].std() > 0


def test_clipping_scales_down_and_is_safe_for_zero():
    update = Params({"a": np.array([3.0, 0.0]), "b": np.array([4.0])})  # norm 5
    clipped, norm = clip_l2(update, 1.0)
    assert norm == 5.0 and clipped.norm() == pytest.approx(1.0)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0])
    small, _ = clip_l2(update, 10.0)
    assert small is update
    zero = Params({"a": np.zeros(2)})
    assert clip_l2(zero, 1.0) == (zero, 0.0)


@pytest.mark.parametrize(
    ("rate", "noise", "steps"),
    [
        (0.01, 1.1, 1000),
        (0.1, 0.8, 100),
        (1.0, 2.0, 50),
        (0.2, 1.5, 30),
        (0.001, 0.5, 10_000),
        (0.05, 1.0, 500),
    ],
)
def test_epsilon_matches_dp_accounting(rate, noise, steps):
    dp_accounting = pytest.importorskip("dp_accounting")
    logging.getLogger("absl").setLevel(logging.ERROR)
    reference = dp_accounting.rdp.RdpAccountant(list(DEFAULT_ORDERS))
    event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(noise))
    reference.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    ours = PrivacyLedger().record(noise, rate, steps).epsilon(1e-5)
    assert ours == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)


def test_full_batch_rdp_is_the_gaussian_mechanism_formula():
    # q = 1: RDP(α) = α / (2σ²)
    np.testing.assert_allclose(rdp_sampled_gaussian(1.0, 2.0, [2, 4.5]), [0.25, 0.5625])
    assert rdp_sampled_gaussian(0.0, 1.0, [2])[0] == 0.0
    assert math.isinf(rdp_sampled_gaussian(0.5, 0.0, [2])[0])


def test_ledger_keeps_history_and_composes():
    ledger = PrivacyLedger().record(1.1, 0.01).record(1.1, 0.01, 9)
    assert ledger.entries == ((1.1, 0.01, 10, 0),)
    assert PrivacyLedger().epsilon(1e-5) == 0.0
    assert ledger.epsilon(1e-5) == PrivacyLedger().record(1.1, 0.01, 10).epsilon(1e-5)
    more = ledger.record(1.1, 0.01, 90)
    assert more.epsilon(1e-5) > ledger.epsilon(1e-5) > 0
    mixed = ledger.record(2.0, 0.05, 5)
    assert len(mixed.entries) == 2 and ledger.entries == ((1.1, 0.01, 10, 0),)  # immutable
    # the same noise at another sampling rate is another release: never merged into the
    # last entry, and ε is what the two compose to (more rounds at a higher rate cost more)
    denser = ledger.record(1.1, 0.05, 10)
    assert denser.entries == ((1.1, 0.01, 10, 0), (1.1, 0.05, 10, 0))
    assert denser.epsilon(1e-5) > PrivacyLedger().record(1.1, 0.01, 20).epsilon(1e-5)


def test_the_discrete_gaussian_has_the_exact_probabilities():
    draws = discrete_gaussian(1.5, 400_000, np.random.default_rng(7))
    support = np.arange(-40, 41)
    pmf = np.exp(-(support**2) / (2 * 1.5**2))
    pmf /= pmf.sum()
    assert draws.dtype == np.int64 and np.abs(draws).max() < 40
    for y in range(-5, 6):
        seen = np.mean(draws == y)
        expected = pmf[support == y][0]
        standard_error = np.sqrt(expected * (1 - expected) / draws.size)
        assert abs(seen - expected) < 4.5 * standard_error, (y, seen, expected)
    wide = discrete_gaussian(2.0**40, 200_000, SecureGenerator())
    assert np.std(wide) / 2.0**40 == pytest.approx(1.0, rel=0.01)


def test_a_dp_release_lies_on_its_grid_whatever_the_input():
    """Mironov's attack reads the low-order bits of a floating-point sum x + noise, whose
    set of possible values depends on x. A discrete release γ·(k + noise) takes values on
    the grid γℤ for every input, so no output tells two neighbouring inputs apart by its
    bits; only by its distribution, which DP bounds."""
    z, sensitivity = 2.0, 0.5
    step = z * sensitivity / 2.0**GRID_BITS
    for x in (np.zeros(100_000), np.full(100_000, 1 / 3), np.full(100_000, 0.1 + 2.0**-40)):
        released = discrete_gaussian_release(x, z, sensitivity, np.random.default_rng(3))
        units = released / step
        assert np.abs(units - np.rint(units)).max() < 1e-3  # on the grid
        # noise of σ = z·(Δ + γ√d): z·Δ = 1 here, up to a factor 1 + 3e-10
        assert np.std(released - x) == pytest.approx(1.0, rel=0.02)
    again = discrete_gaussian_release(1.0, z, sensitivity, np.random.default_rng(3))
    assert again == discrete_gaussian_release(1.0, z, sensitivity, np.random.default_rng(3))
