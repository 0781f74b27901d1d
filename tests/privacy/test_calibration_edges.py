"""The edges of the privacy calibrations: every argument check names its field and
range, the closed ends that are allowed, σ's precision at every scale, and noise that is
exactly the generator's draw added to the value."""

import hashlib
import math
import sys
import warnings

import numpy as np
import pytest

from fedstream import ConfigError, FedAvg, Params
from fedstream.privacy import (
    DifferentialPrivacy,
    SecureGenerator,
    add_gaussian,
    add_laplace,
    gaussian_delta,
    gaussian_sigma_analytic,
    gaussian_sigma_classic,
    laplace_scale,
    update_noise_multiplier,
)
from fedstream.privacy.accountant import (
    PrivacyLedger,
    _log_add,
    epsilon_from_rdp,
    epsilon_pld,
    epsilon_without_replacement,
    rdp_sampled_gaussian,
)
from fedstream.privacy.mechanisms import device_noise_seed
from fedstream.types import WeightedSum

POSITIVE = "expected a finite number > 0$"
OPEN_UNIT = r"expected a number in \(0, 1\)$"
RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: laplace_scale(0.0, 1.0), "^sensitivity=0.0 is invalid: " + POSITIVE),
        (
            lambda: gaussian_sigma_classic(0.0, 0.5, 1e-5),
            "^sensitivity=0.0 is invalid: " + POSITIVE,
        ),
        (lambda: gaussian_sigma_classic(1.0, 0.0, 1e-5), "^epsilon=0.0 is invalid: " + POSITIVE),
        (lambda: gaussian_sigma_classic(1.0, 0.5, 0.0), "^delta=0.0 is invalid: " + OPEN_UNIT),
        (lambda: gaussian_sigma_classic(1.0, 0.5, 1.0), "^delta=1.0 is invalid: " + OPEN_UNIT),
        (
            lambda: gaussian_sigma_classic(1.0, 1.0, 1e-5),
            r"^epsilon=1.0 is invalid: expected < 1 for the classic Gaussian calibration "
            r"\(use gaussian_sigma_analytic for any epsilon\)$",
        ),
        (
            lambda: gaussian_sigma_analytic(0.0, 1.0, 1e-5),
            "^sensitivity=0.0 is invalid: " + POSITIVE,
        ),
        (lambda: gaussian_sigma_analytic(1.0, 0.0, 1e-5), "^epsilon=0.0 is invalid: " + POSITIVE),
        (lambda: gaussian_sigma_analytic(1.0, 1.0, 0.0), "^delta=0.0 is invalid: " + OPEN_UNIT),
        (lambda: gaussian_sigma_analytic(1.0, 1.0, 1.0), "^delta=1.0 is invalid: " + OPEN_UNIT),
        (lambda: add_laplace(1.0, 0.0, RNG), "^scale=0.0 is invalid: " + POSITIVE),
        (lambda: add_gaussian(1.0, 0.0, RNG), "^sigma=0.0 is invalid: " + POSITIVE),
        (lambda: epsilon_pld([], 0.0), "^delta=0.0 is invalid: " + OPEN_UNIT),
        (lambda: epsilon_pld([], 1.0), "^delta=1.0 is invalid: " + OPEN_UNIT),
        (lambda: epsilon_without_replacement([], 0.0), "^delta=0.0 is invalid: " + OPEN_UNIT),
        (lambda: epsilon_without_replacement([], 1.0), "^delta=1.0 is invalid: " + OPEN_UNIT),
        (
            lambda: update_noise_multiplier(-1.0, 1.0),
            "^dp_noise=-1.0 is invalid: expected a finite number >= 0$",
        ),
        (
            lambda: update_noise_multiplier(1.0, 0.0),
            "^dp_clipped_count_stddev=0.0 is invalid: " + POSITIVE,
        ),
        (
            lambda: update_noise_multiplier(3.0, 1.5),
            "^dp_clipped_count_stddev=1.5 is invalid: expected more than dp_noise/2 = 1.5, so "
            "the clipped count does not use up the whole privacy budget$",
        ),
    ],
)
def test_each_check_names_its_field_value_and_range(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_without_dp_accounting_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # as if not installed
    with pytest.raises(
        ConfigError,
        match=r"^dp_accountant='pld' is invalid: expected 'rdp', or install dp-accounting: "
        r"pip install 'fedstream\[privacy\]'$",
    ):
        epsilon_pld([(1.0, 0.1, 1, 0)], 1e-5)
    with pytest.raises(
        ConfigError,
        match=r"^privacy='fixed-size client sampling' is invalid: expected install dp-accounting",
    ):
        epsilon_without_replacement([(1.0, 0.1, 1, 100)], 1e-5)


def test_classic_calibration_just_below_epsilon_one():
    # √(2 ln 125000) / 0.999 = 4.844805263 / 0.999
    assert gaussian_sigma_classic(1.0, 0.999, 1e-5) == pytest.approx(4.849654918, rel=1e-9)


def test_update_noise_multiplier_by_hand():
    # z = 2, σ_b = 2: (2⁻² − 4⁻²)^(−1/2) = 0.1875^(−1/2) = 2.309401077
    assert update_noise_multiplier(2.0, 2.0) == pytest.approx(2.309401077, rel=1e-9)


@pytest.mark.parametrize("sensitivity", [1e-7, 1e-3, 3.0, 1e4])
@pytest.mark.parametrize("epsilon", [0.3, 1.0, 20.0])
def test_analytic_sigma_scales_with_the_sensitivity_to_twelve_digits(sensitivity, epsilon):
    # includes ε = 20, where σ < Δ and the search starts below its bracket's upper end
    unit = gaussian_sigma_analytic(1.0, epsilon, 1e-5)
    sigma = gaussian_sigma_analytic(sensitivity, epsilon, 1e-5)
    assert sigma == pytest.approx(sensitivity * unit, rel=1e-10)
    assert gaussian_delta(sigma, sensitivity, epsilon) <= 1e-5
    assert gaussian_delta(sigma * (1 - 1e-9), sensitivity, epsilon) > 1e-5


def test_noise_is_the_generators_draw_added_to_the_value():
    params = Params({"w": np.arange(4.0).reshape(2, 2)})
    noisy = add_gaussian(params, 0.5, np.random.default_rng(7))
    draw = np.random.default_rng(7).normal(0.0, 0.5, (2, 2))
    np.testing.assert_array_equal(noisy["w"], params["w"] + draw)
    array = add_laplace(np.ones(3), 2.0, np.random.default_rng(8))
    np.testing.assert_array_equal(array, 1.0 + np.random.default_rng(8).laplace(0.0, 2.0, 3))
    number = add_gaussian(5.0, 1.0, np.random.default_rng(9))
    assert number == 5.0 + float(np.random.default_rng(9).normal(0.0, 1.0))


def test_secure_generator_shapes_scalars_and_location():
    secure = SecureGenerator()
    for draw in (secure.normal(2.0, 1.0), secure.laplace(2.0, 1.0), secure.random()):
        assert isinstance(draw, float) and math.isfinite(draw)
    assert secure.normal(0.0, 1.0, (2, 3)).shape == (2, 3)
    assert secure.laplace(0.0, 1.0, (3, 2)).shape == (3, 2)
    assert secure.random((4, 1)).shape == (4, 1)
    assert secure.normal(5.0, 1.0, 50_000).mean() == pytest.approx(5.0, abs=0.03)
    assert np.median(secure.laplace(-3.0, 1.0, 50_000)) == pytest.approx(-3.0, abs=0.03)


def test_a_release_without_noise_costs_everything_and_an_unsampled_one_nothing():
    noisy = [(1.0, 0.1, 10, 100)]
    assert epsilon_without_replacement([(0.0, 0.1, 1, 100)], 1e-5) == math.inf
    assert epsilon_without_replacement([(0.0, 0.0, 5, 100), *noisy], 1e-5) == (
        epsilon_without_replacement(noisy, 1e-5)
    )


def test_epsilon_after_no_rounds_is_what_the_ledger_already_holds():
    dp = DifferentialPrivacy(FedAvg(), noise_multiplier=1.0, client_sampling_rate=0.1)
    assert dp.epsilon_after(0) == 0.0
    assert dp.epsilon_after(3) > dp.epsilon_after(1) > 0.0


def test_the_noisy_sum_is_divided_by_the_expected_or_the_actual_count():
    total = Params({"w": np.ones(2)})
    poisson = DifferentialPrivacy(FedAvg(), client_sampling_rate=0.1)
    # Poisson sampling: q·N whoever joined, even a population of one
    assert poisson.denominator(WeightedSum(total, 3.0, count=3, population=50)) == 5.0
    assert poisson.denominator(WeightedSum(total, 0.0, count=0, population=1)) == 0.1
    # no population known, or fixed-size sampling: the count aggregated, at least one
    assert poisson.denominator(WeightedSum(total, 3.0, count=3, population=0)) == 3.0
    fixed = DifferentialPrivacy(
        FedAvg(), client_sampling="fixed", client_sampling_rate=0.1, clients=50
    )
    assert fixed.denominator(WeightedSum(total, 3.0, count=3, population=50)) == 3.0
    assert fixed.denominator(WeightedSum(total, 0.0, count=0, population=50)) == 1.0


def test_log_add_of_two_empty_sums_stays_empty():
    assert _log_add(-math.inf, -math.inf) == -math.inf
    assert _log_add(-math.inf, 2.0) == 2.0
    assert _log_add(math.log(2.0), math.log(3.0)) == pytest.approx(math.log(5.0), rel=1e-15)


def test_accountant_checks_and_an_rdp_curve_that_is_infinite_everywhere():
    with pytest.raises(
        ConfigError, match=r"^sampling_rate=1.5 is invalid: expected a number in \[0, 1\]$"
    ):
        rdp_sampled_gaussian(1.5, 1.0)
    for delta in (0.0, 1.0):
        with pytest.raises(ConfigError, match=f"^delta={delta} is invalid: " + OPEN_UNIT):
            epsilon_from_rdp(np.zeros(3), delta, [2.0, 4.0, 8.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division warnings leak from order 1 or ∞ RDP
        eps, _ = epsilon_from_rdp(np.full(3, np.inf), 1e-5, [1.0, 2.0, 4.0])
    assert eps == math.inf


def test_a_ledger_sums_its_entries_rdp_at_the_orders_asked():
    orders = [2.0, 8.0, 32.0]
    ledger = PrivacyLedger().record(1.0, 0.1, 5).record(2.0, 0.2, 3)
    expected = 5 * rdp_sampled_gaussian(0.1, 1.0, orders) + 3 * rdp_sampled_gaussian(
        0.2, 2.0, orders
    )
    np.testing.assert_allclose(ledger.rdp(orders), expected, rtol=1e-12)


def test_a_simulated_devices_noise_seed_is_a_keyed_blake2b_of_its_id_and_round():
    # the derivation, spelled out independently: key = the 16-byte little-endian secret,
    # message = "<client id>\0<round>", digest 16 bytes read little-endian
    secret = 2**127 + 5
    digest = hashlib.blake2b(b"client-7\x000", key=secret.to_bytes(16, "little"), digest_size=16)
    assert device_noise_seed(secret, "client-7", 0) == int.from_bytes(digest.digest(), "little")
    assert device_noise_seed(secret, "client-7", 1) != device_noise_seed(secret, "client-7", 0)
    assert device_noise_seed(secret + 1, "client-7", 0) != device_noise_seed(secret, "client-7", 0)
