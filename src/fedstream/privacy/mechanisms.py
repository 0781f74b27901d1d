"""Laplace and Gaussian mechanisms: calibration (pure functions) and noise on numbers,
arrays and ``Params``, from a generator the caller passes in.

- Laplace: scale b = Δ₁/ε gives ε-DP for L1 sensitivity Δ₁.
- Gaussian, classic (Dwork & Roth, Thm A.1): σ = Δ₂·√(2 ln(1.25/δ))/ε, valid for ε < 1.
- Gaussian, analytic (Balle & Wang, ICML 2018): the smallest σ with
  Φ(Δ/2σ − εσ/Δ) − e^ε·Φ(−Δ/2σ − εσ/Δ) ≤ δ, exact for every ε > 0 and never larger than
  the classic σ.

Every release that claims differential privacy uses :func:`discrete_gaussian_release`:
the value is snapped to a grid and the noise is an integer drawn from the discrete
Gaussian (Canonne, Kamath and Steinke 2020). The output is always a multiple of the grid
step, whatever the input, so the low-order bits that Mironov's 2012 attack on
floating-point noise reads carry nothing. :func:`add_gaussian` and :func:`add_laplace`
add floating-point noise. They remain for experiments, and they are not differentially
private against that attack.

For production, :class:`SecureGenerator` draws from the operating system's CSPRNG
(``os.urandom``) instead of a seeded PRNG. :func:`client_noise` is where a client gets the
generator for its own privacy noise: the CSPRNG, or in a simulation a generator seeded
from the simulated device's secret (never from anything the server sends). The CSPRNG
still turns uniform bits into floating-point noise the textbook way, so it does not
defend against the floating-point attacks on the Laplace mechanism (Mironov 2012); use it
where an attacker must not predict the noise.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
from scipy.special import log_ndtr

from fedstream import checks
from fedstream.errors import ConfigError
from fedstream.params import Params

Value = TypeVar("Value", float, npt.NDArray[Any], Params)


class NoiseSource(Protocol):
    """What a mechanism needs from a generator: ``numpy.random.Generator`` fits."""

    def normal(self, loc: float, scale: float, size: Any = None) -> Any: ...

    def random(self, size: Any = None) -> Any: ...

    def laplace(self, loc: float, scale: float, size: Any = None) -> Any: ...


def laplace_scale(sensitivity: float, epsilon: float) -> float:
    """Laplace scale b = Δ₁/ε for ε-DP."""
    checks.positive("sensitivity", sensitivity)
    checks.positive("epsilon", epsilon)
    return sensitivity / epsilon


def gaussian_sigma_classic(sensitivity: float, epsilon: float, delta: float) -> float:
    """σ = Δ₂·√(2 ln(1.25/δ))/ε, the classic calibration; it is only a proof for ε < 1."""
    checks.positive("sensitivity", sensitivity)
    checks.positive("epsilon", epsilon)
    checks.in_unit_interval("delta", delta, include_zero=False, include_one=False)
    if epsilon >= 1:
        raise ConfigError(
            "epsilon",
            epsilon,
            "< 1 for the classic Gaussian calibration "
            "(use gaussian_sigma_analytic for any epsilon)",
        )
    return sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


def gaussian_delta(sigma: float, sensitivity: float, epsilon: float) -> float:
    """The δ the Gaussian mechanism with noise σ attains at ε (Balle & Wang, Thm 8)."""
    a = sensitivity / (2 * sigma)
    b = epsilon * sigma / sensitivity
    first = math.exp(float(log_ndtr(a - b)))
    second = math.exp(epsilon + float(log_ndtr(-a - b)))
    return max(first - second, 0.0)


def gaussian_sigma_analytic(sensitivity: float, epsilon: float, delta: float) -> float:
    """The smallest σ whose Gaussian mechanism is (ε, δ)-DP, found by bisection to a
    relative precision of 1e-12 (δ(σ) falls as σ grows)."""
    checks.positive("sensitivity", sensitivity)
    checks.positive("epsilon", epsilon)
    checks.in_unit_interval("delta", delta, include_zero=False, include_one=False)
    low, high = 1e-12 * sensitivity, sensitivity
    while gaussian_delta(high, sensitivity, epsilon) > delta:
        low, high = high, 2 * high
    while (high - low) > 1e-12 * high:
        middle = (low + high) / 2
        if gaussian_delta(middle, sensitivity, epsilon) > delta:
            low = middle
        else:
            high = middle
    return high


def _noisy(value: Value, draw: Any) -> Value:
    if isinstance(value, Params):
        return value.map(lambda a: a + draw(a.shape).astype(a.dtype, copy=False))
    if isinstance(value, np.ndarray):
        noisy: npt.NDArray[Any] = value + draw(value.shape)
        return noisy
    return float(value) + float(draw(None))


def add_laplace(value: Value, scale: float, rng: NoiseSource) -> Value:
    """``value`` plus independent Laplace(0, scale) floating-point noise on every element.
    Not DP against floating-point attacks (module docstring)."""
    checks.positive("scale", scale)
    return _noisy(value, lambda shape: np.asarray(rng.laplace(0.0, scale, shape)))


def add_gaussian(value: Value, sigma: float, rng: NoiseSource) -> Value:
    """``value`` plus independent N(0, σ²) floating-point noise on every element. Not DP
    against floating-point attacks: DP releases use :func:`discrete_gaussian_release`."""
    checks.positive("sigma", sigma)
    return _noisy(value, lambda shape: np.asarray(rng.normal(0.0, sigma, shape)))


GRID_BITS = 40
"""The grid step is σ/2^GRID_BITS: fine enough that snapping changes nothing measurable,
coarse enough that grid values fit in int64 with room for 40σ of noise."""


def discrete_gaussian(sigma: float, size: int, rng: NoiseSource) -> npt.NDArray[np.int64]:
    """``size`` draws from the discrete Gaussian N_Z(0, σ²): P(y) ∝ exp(−y²/2σ²) on the
    integers, by Canonne, Kamath and Steinke's rejection from the discrete Laplace with
    scale t = ⌊σ⌋ + 1 (their Algorithm 3). The discrete Laplace draw is the difference of
    two geometric draws, ⌊t·E⌋ with E exponential; the Bernoulli trials compare a uniform
    with a float64 probability. That approximates the exact rational trials of the paper
    by about 2⁻⁵⁰ per draw, and every output is an integer."""
    checks.positive("sigma", sigma)
    t = math.floor(sigma) + 1
    out = np.empty(size, dtype=np.int64)
    pending = np.arange(size)
    while pending.size:
        n = pending.size
        u = 1.0 - np.asarray(rng.random(2 * n), dtype=np.float64)  # in (0, 1]
        geometric = np.floor(-t * np.log(u)).astype(np.int64)
        y = geometric[:n] - geometric[n:]
        accept = np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        keep = np.asarray(rng.random(n), dtype=np.float64) < accept
        out[pending[keep]] = y[keep]
        pending = pending[~keep]
    return out


def grid_step(noise_multiplier: float, sensitivity: float) -> float:
    """The grid γ = z·Δ / 2^GRID_BITS that ``discrete_gaussian_release`` rounds onto."""
    return noise_multiplier * sensitivity / 2.0**GRID_BITS


def grid_sigma(noise_multiplier: float, sensitivity: float, dimension: int) -> float:
    """The integer noise's σ = z·(Δ/γ + √d), in grid steps: Δ/γ + √d bounds the rounded
    vector's sensitivity, so the release keeps noise multiplier z."""
    step = grid_step(noise_multiplier, sensitivity)
    return noise_multiplier * (sensitivity / step + math.sqrt(dimension))


def discrete_gaussian_release(
    value: Value, noise_multiplier: float, sensitivity: float, rng: NoiseSource
) -> Value:
    """The discrete Gaussian mechanism for a value of L2 ``sensitivity`` Δ (a number, an
    array or ``Params``, all of it one vector of d entries).

    The value is rounded to the grid γ = z·Δ / 2^GRID_BITS, an integer vector k whose
    sensitivity is at most Δ/γ + √d (rounding moves each entry by at most half a step).
    Integer noise N_Z(0, σ²) with σ = z·(Δ/γ + √d) is added, and γ·(k + noise) released,
    so the release is a discrete Gaussian mechanism with noise multiplier exactly z, as
    the accountant records it (its noise is larger than z·Δ by a factor 1 + γ√d/Δ, about
    1 + 1e-9 at d = 10⁶)."""
    checks.positive("noise_multiplier", noise_multiplier)
    checks.positive("sensitivity", sensitivity)
    step = grid_step(noise_multiplier, sensitivity)

    def release(array: npt.NDArray[Any], dimension: int) -> npt.NDArray[np.float64]:
        grid = np.rint(np.asarray(array, dtype=np.float64) / step).astype(np.int64)
        sigma = grid_sigma(noise_multiplier, sensitivity, dimension)
        noise = discrete_gaussian(sigma, grid.size, rng).reshape(grid.shape)
        released: npt.NDArray[np.float64] = (grid + noise).astype(np.float64) * step
        return released

    if isinstance(value, Params):
        flat = release(value.flat(np.float64), value.num_elements)
        return Params.from_flat(flat, value)
    if isinstance(value, np.ndarray):
        return release(value, value.size)
    return float(release(np.array([float(value)]), 1)[0])


class SecureGenerator:
    """Normal and Laplace draws from ``os.urandom``: unpredictable, not reproducible.

    Uniforms come from 53 random bits each, in (0, 1); normals from Box–Muller, Laplace
    from the inverse CDF. It keeps no state beyond what the operating system keeps.
    """

    @staticmethod
    def _uniform(count: int) -> npt.NDArray[np.float64]:
        bits = np.frombuffer(os.urandom(8 * count), dtype=np.uint64) >> np.uint64(11)
        return (bits.astype(np.float64) + 0.5) / float(1 << 53)

    def normal(self, loc: float, scale: float, size: Any = None) -> Any:
        count = int(np.prod(size)) if size is not None else 1
        u1, u2 = self._uniform(count), self._uniform(count)
        z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
        out = loc + scale * z
        return out.reshape(size) if size is not None else float(out[0])

    def random(self, size: Any = None) -> Any:
        """Uniform draws in (0, 1), as ``numpy.random.Generator.random``."""
        count = int(np.prod(size)) if size is not None else 1
        out = self._uniform(count)
        return out.reshape(size) if size is not None else float(out[0])

    def laplace(self, loc: float, scale: float, size: Any = None) -> Any:
        count = int(np.prod(size)) if size is not None else 1
        u = self._uniform(count) - 0.5
        out = loc - scale * np.sign(u) * np.log1p(-2.0 * np.abs(u))
        return out.reshape(size) if size is not None else float(out[0])


DEVICE_SECRET_STREAM = 0x44455649  # separates the simulated devices' secret from the run's
LOCAL_NOISE_STREAM = 0x4C4450  # local-DP noise and DP-SGD draw apart from one noise seed
DP_SGD_STREAM = 0x445053


def device_secret(run_seed: int) -> int:
    """The secret every simulated device of a run derives its noise seeds from: 128 bits
    from the run's seed in a stream of its own. Only the simulated devices hold it; the
    server's code never reads it, and a deployed client has none (it uses the CSPRNG)."""
    words = np.random.SeedSequence([run_seed, DEVICE_SECRET_STREAM]).generate_state(2, np.uint64)
    return int(words[0]) << 64 | int(words[1])


def device_noise_seed(secret: int, client_id: str, round_number: int) -> int:
    """A simulated client's noise seed for one round: a keyed hash (BLAKE2b) of its id and
    the round under the device secret, so seeds of different clients and rounds are
    unrelated and none can be computed without the secret."""
    key = secret.to_bytes(16, "little")
    digest = hashlib.blake2b(f"{client_id}\x00{round_number}".encode(), key=key, digest_size=16)
    return int.from_bytes(digest.digest(), "little")


def client_noise(noise_seed: int | None, stream: int) -> NoiseSource:
    """The generator a client draws its privacy noise from: seeded by its own
    ``noise_seed`` (a simulated device's, reproducible) in ``stream``, or the OS CSPRNG
    when it has none."""
    if noise_seed is None:
        return SecureGenerator()
    return np.random.default_rng([noise_seed, stream])
