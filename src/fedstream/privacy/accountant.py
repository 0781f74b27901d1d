"""Rényi-DP accounting of the sampled Gaussian mechanism.

The ledger keeps only history, (noise multiplier, sampling rate, steps) per entry, and ε
is a pure function of it. That way the ledger can live in ``ServerState`` and survive a
checkpoint.

RDP of one step of the Poisson-subsampled Gaussian mechanism with sampling rate q and noise
multiplier σ (noise std / sensitivity) at order α follows Mironov, Talwar & Zhang, "Rényi
Differential Privacy of the Sampled Gaussian Mechanism" (2019), Section 3.3:
RDP(α) = log A_α / (α − 1). A_α is a finite binomial sum for integer α and a convergent
series over both tails for fractional α (an order whose series does not converge within
1,000 terms is left out, as dp-accounting leaves it out). Steps compose additively.
The conversion to (ε, δ) is the tighter one of Balle et al. 2020 (Thm 21):
ε = min over α of RDP(α) + log((α − 1)/α) − (log δ + log α)/(α − 1).

The same history can also be accounted with privacy-loss distributions (PLD) through
Google's dp-accounting, which gives a tighter ε at about a second per call.

Those analyses are for Poisson sampling (each client joins a round independently with
probability q) under the add-or-remove-one neighbouring relation. A round that samples a
fixed number k of N clients without replacement is a different mechanism: replacing one
client moves the clipped sum by up to 2C, and ε can be about twice the Poisson figure.
Such entries carry the population N, and are accounted with dp-accounting's analysis of
sampling without replacement under the replace-one relation (Wang, Balle and
Kasiviswanathan 2019).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import binom, gammaln, log_ndtr

from fedstream import checks
from fedstream.errors import ConfigError

AccountantMethod = Literal["rdp", "pld"]

DEFAULT_ORDERS: tuple[float, ...] = (
    *(1 + x / 10 for x in range(1, 100)),
    *range(11, 64),
    128,
    256,
    512,
)


def _log_add(a: float, b: float) -> float:
    """log(eᵃ + eᵇ) without overflow."""
    low, high = min(a, b), max(a, b)
    if low == -math.inf:
        return high
    return math.log1p(math.exp(low - high)) + high


def _log_erfc(x: float) -> float:
    """log erfc(x), accurate far into the tail (erfc(x) = 2·Φ(−x√2))."""
    return math.log(2) + float(log_ndtr(-x * math.sqrt(2)))


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    log_a = -math.inf
    for i in range(alpha + 1):
        log_coef = math.log(binom(alpha, i)) + i * math.log(q) + (alpha - i) * math.log1p(-q)
        log_a = _log_add(log_a, log_coef + (i * i - i) / (2 * sigma**2))
    return log_a


_MAX_SERIES_TERMS = 1000


def _log_a_fractional(q: float, sigma: float, alpha: float) -> float:
    """log A_α for fractional α: the two tails of the integral split at z0, each a series in
    |C(α, i)| (summing magnitudes bounds A_α from above, so ε is never understated). It stops
    when both tails' terms are falling and 30 nats below the running total, and gives +∞
    (the order is then never chosen) if that has not happened after
    ``_MAX_SERIES_TERMS`` terms, as dp-accounting does."""
    log_a0 = log_a1 = -math.inf
    last0 = last1 = -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    for i in range(_MAX_SERIES_TERMS):
        j = alpha - i
        log_coef = float(gammaln(alpha + 1) - gammaln(i + 1) - gammaln(j + 1))  # log |C(α, i)|
        log_t0 = log_coef + i * math.log(q) + j * math.log1p(-q)
        log_t1 = log_coef + j * math.log(q) + i * math.log1p(-q)
        log_e0 = math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        log_e1 = math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2 * sigma**2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma**2) + log_e1
        log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        total = _log_add(log_a0, log_a1)
        if log_s0 < last0 and log_s1 < last1 and max(log_s0, log_s1) < total - 30:
            return total
        last0, last1 = log_s0, log_s1
    return math.inf


def rdp_sampled_gaussian(
    sampling_rate: float, noise_multiplier: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> np.ndarray:
    """RDP of one step at each order, shape (len(orders),)."""
    checks.in_unit_interval("sampling_rate", sampling_rate, include_zero=True, include_one=True)
    checks.non_negative("noise_multiplier", noise_multiplier)
    return np.array(_rdp_at_orders(float(sampling_rate), float(noise_multiplier), tuple(orders)))


@functools.lru_cache(maxsize=256)
def _rdp_at_orders(
    sampling_rate: float, noise_multiplier: float, orders: tuple[float, ...]
) -> tuple[float, ...]:
    """Cached: a run asks for the same (q, z) every round, and fractional orders cost a
    series of up to 1,000 terms each."""
    out = np.empty(len(orders))
    for k, alpha in enumerate(orders):
        if alpha <= 1:
            raise ValueError(f"RDP order {alpha} is invalid: expected > 1")
        if sampling_rate == 0:
            out[k] = 0.0
        elif noise_multiplier == 0:
            out[k] = math.inf
        elif sampling_rate == 1:
            out[k] = alpha / (2 * noise_multiplier**2)
        else:
            log_a = (
                _log_a_integer(sampling_rate, noise_multiplier, int(alpha))
                if float(alpha).is_integer()
                else _log_a_fractional(sampling_rate, noise_multiplier, alpha)
            )
            out[k] = log_a / (alpha - 1)
    return tuple(float(v) for v in out)


def epsilon_from_rdp(
    rdp: np.ndarray, delta: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> tuple[float, float]:
    """(ε, the order that gives it) at ``delta`` from RDP values at ``orders``."""
    checks.in_unit_interval("delta", delta, include_zero=False, include_one=False)
    alphas = np.asarray(orders, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = rdp + np.log1p(-1 / alphas) - (math.log(delta) + np.log(alphas)) / (alphas - 1)
    eps = np.where(np.isnan(eps), np.inf, eps)
    best = int(np.argmin(eps))
    return max(float(eps[best]), 0.0), float(alphas[best])


Entry = tuple[float, float, int, int]
"""(noise multiplier, sampling rate, steps, population): population 0 for Poisson
sampling at the rate; N > 0 for round(rate·N) of N drawn without replacement."""

POISSON = 0


@dataclass(frozen=True)
class PrivacyLedger:
    """The history of noisy releases (``Entry``). ``record`` returns a new ledger;
    ``epsilon`` is computed from the entries."""

    entries: tuple[Entry, ...] = ()

    def record(
        self,
        noise_multiplier: float,
        sampling_rate: float,
        steps: int = 1,
        population: int = POISSON,
    ) -> PrivacyLedger:
        checks.non_negative("noise_multiplier", noise_multiplier)
        checks.in_unit_interval("sampling_rate", sampling_rate, include_zero=True, include_one=True)
        checks.positive_int("steps", steps)
        checks.non_negative_int("population", population)
        if self.entries and (population == POISSON) != (self.entries[0][3] == POISSON):
            raise ConfigError(
                "client sampling",
                "fixed" if population else "poisson",
                "the sampling this ledger's earlier rounds used: Poisson and fixed-size "
                "releases are accounted under different neighbouring relations",
            )
        last = self.entries[-1] if self.entries else None
        if last is not None and (last[0], last[1], last[3]) == (
            noise_multiplier, sampling_rate, population
        ):  # fmt: skip
            merged = (last[0], last[1], last[2] + steps, last[3])
            return PrivacyLedger((*self.entries[:-1], merged))
        entry = (noise_multiplier, sampling_rate, steps, population)
        return PrivacyLedger((*self.entries, entry))

    @property
    def fixed_size(self) -> bool:
        """Whether the releases sampled a fixed number of clients (replace-one relation)."""
        return bool(self.entries) and self.entries[0][3] != POISSON

    def rdp(self, orders: Sequence[float] = DEFAULT_ORDERS) -> np.ndarray:
        """RDP of the Poisson entries at each order (fixed-size ones are dp-accounting's)."""
        total = np.zeros(len(orders))
        for noise, rate, steps, _ in self.entries:
            total += steps * rdp_sampled_gaussian(rate, noise, orders)
        return total

    def epsilon(
        self,
        delta: float,
        orders: Sequence[float] = DEFAULT_ORDERS,
        method: AccountantMethod = "rdp",
    ) -> float:
        """ε at ``delta`` for everything recorded so far (0 for an empty ledger), by RDP or
        by privacy-loss distributions (``method="pld"``, see :func:`epsilon_pld`)."""
        if not self.entries:
            return 0.0
        if self.fixed_size:
            if method == "pld":
                raise ConfigError(
                    "privacy.accountant",
                    "pld",
                    "'rdp' with fixed-size client sampling (dp-accounting's PLD has no "
                    "analysis of sampling without replacement), or Poisson sampling",
                )
            return epsilon_without_replacement(self.entries, delta)
        if method == "pld":
            return epsilon_pld(self.entries, delta)
        return epsilon_from_rdp(self.rdp(orders), delta, orders)[0]


def _dp_accounting(field: str, value: str, alternative: str) -> Any:
    """The optional dp-accounting package, or an error naming what needed it and what to
    do instead."""
    try:
        import dp_accounting
    except ImportError:
        raise ConfigError(
            field, value, f"{alternative}install dp-accounting: pip install 'fedstream[privacy]'"
        ) from None
    return dp_accounting


def epsilon_without_replacement(entries: Sequence[Entry], delta: float) -> float:
    """ε at ``delta`` for rounds that each sample round(rate·N) of N clients without
    replacement, under the replace-one relation: dp-accounting's RDP analysis (Wang, Balle
    and Kasiviswanathan 2019), an optional dependency."""
    checks.in_unit_interval("delta", delta, include_zero=False, include_one=False)
    if any(noise == 0 and rate > 0 for noise, rate, _, _ in entries):
        return math.inf  # a release without noise
    dp_accounting = _dp_accounting("privacy", "fixed-size client sampling", "")
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    for noise, rate, steps, population in entries:
        sampled = round(rate * population)
        event = dp_accounting.SampledWithoutReplacementDpEvent(
            population, sampled, dp_accounting.GaussianDpEvent(noise)
        )
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return float(accountant.get_epsilon(delta))


def epsilon_pld(entries: Sequence[Entry], delta: float) -> float:
    """ε at ``delta`` by composing privacy-loss distributions (Koskela et al. 2020; Doroshenko
    et al. 2022) with Google's dp-accounting library: tighter than RDP, about a second per
    call. dp-accounting is an optional dependency (``pip install 'fedstream[privacy]'``)."""
    checks.in_unit_interval("delta", delta, include_zero=False, include_one=False)
    dp_accounting = _dp_accounting("dp_accountant", "pld", "'rdp', or ")
    from dp_accounting.pld.pld_privacy_accountant import PLDAccountant

    accountant = PLDAccountant()
    for noise, rate, steps, _ in entries:
        event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(noise))
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return float(accountant.get_epsilon(delta))
