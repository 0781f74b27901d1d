"""The privacy ledger's edges: its error messages, how it merges entries, and ε at orders
the caller chooses, pinned against the closed form where the sampling rate is 1."""

import math

import pytest

from fedstream import ConfigError
from fedstream.privacy import PrivacyLedger, rdp_sampled_gaussian


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: PrivacyLedger().record(1.0, 0.1, steps=0),
            r"^steps=0 is invalid: expected an integer >= 1$",
        ),
        (
            lambda: PrivacyLedger().record(1.0, 0.1, population=-1),
            r"^population=-1 is invalid: expected an integer >= 0$",
        ),
        (
            lambda: PrivacyLedger().record(1.0, -0.1),
            r"^sampling_rate=-0\.1 is invalid: expected a number in \[0, 1\]$",
        ),
        (
            lambda: rdp_sampled_gaussian(0.1, -1.0),
            r"^noise_multiplier=-1\.0 is invalid: expected a finite number >= 0$",
        ),
    ],
)
def test_record_names_the_bad_field(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_sampling_mode_cannot_change_within_one_ledger():
    relation = (
        r"is invalid: expected the sampling this ledger's earlier rounds used: Poisson and "
        r"fixed-size releases are accounted under different neighbouring relations$"
    )
    with pytest.raises(ConfigError, match=r"^client sampling='fixed' " + relation):
        PrivacyLedger().record(1.0, 0.1).record(1.0, 0.1, population=50)
    with pytest.raises(ConfigError, match=r"^client sampling='poisson' " + relation):
        PrivacyLedger().record(1.0, 0.1, population=50).record(1.0, 0.1)


def test_zero_sampling_rate_is_a_release_nobody_joined():
    ledger = PrivacyLedger().record(1.0, 0.0)
    assert ledger.entries == ((1.0, 0.0, 1, 0),)
    assert list(ledger.rdp((2.0, 8.0))) == [0.0, 0.0]


def test_only_the_last_entry_merges_and_earlier_ones_stay():
    ledger = PrivacyLedger().record(1.0, 0.1).record(2.0, 0.1, 3).record(2.0, 0.1, 4)
    assert ledger.entries == ((1.0, 0.1, 1, 0), (2.0, 0.1, 7, 0))
    again = ledger.record(1.0, 0.1)  # like the first entry, but not the last: a new entry
    assert again.entries == ((1.0, 0.1, 1, 0), (2.0, 0.1, 7, 0), (1.0, 0.1, 1, 0))


def test_pld_refuses_fixed_size_sampling_and_says_what_to_use():
    ledger = PrivacyLedger().record(1.0, 0.1, population=50)
    with pytest.raises(
        ConfigError,
        match=(
            r"^privacy\.accountant='pld' is invalid: expected 'rdp' with fixed-size client "
            r"sampling \(dp-accounting's PLD has no analysis of sampling without "
            r"replacement\), or Poisson sampling$"
        ),
    ):
        ledger.epsilon(1e-5, method="pld")


def test_epsilon_uses_the_orders_it_is_given():
    # At sampling rate 1, RDP(α) = steps·α / (2σ²) exactly, and ε is the minimum over the
    # given orders of RDP(α) + log(1 − 1/α) − (log δ + log α)/(α − 1) (Balle et al. 2020).
    sigma, steps, delta = 2.0, 3, 1e-5
    ledger = PrivacyLedger().record(sigma, 1.0, steps)

    def closed_form(alpha: float) -> float:
        rdp = steps * alpha / (2 * sigma**2)
        return rdp + math.log1p(-1 / alpha) - (math.log(delta) + math.log(alpha)) / (alpha - 1)

    # With only these two orders the best is α = 3; the default grid finds a lower ε.
    assert closed_form(3.0) < closed_form(2.0)
    assert ledger.epsilon(delta, orders=(2.0, 3.0)) == pytest.approx(closed_form(3.0), rel=1e-12)
    best_default = ledger.epsilon(delta)
    assert best_default < closed_form(3.0) - 0.1
