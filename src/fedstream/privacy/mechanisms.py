"""Laplace and Gaussian mechanisms: calibration (pure functions) and noise on numbers,
arrays and ``Params``, from a generator the caller passes in.

- Laplace: scale b = Δ₁/ε gives ε-DP for L1 sensitivity Δ₁.
- Gaussian, classic (Dwork & Roth, Thm A.1): σ = Δ₂·√(2 ln(1.25/δ))/ε, valid for ε < 1.
- Gaussian, analytic (Balle & Wang, ICML 2018): the smallest σ with
  Φ(Δ/2σ − εσ/Δ) − e^ε·Φ(−Δ/2σ − εσ/Δ) ≤ δ, exact for every ε > 0 and never larger than
  the classic σ.

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
    """``value`` plus independent Laplace(0, scale) noise on every element."""
    checks.positive("scale", scale)
    return _noisy(value, lambda shape: np.asarray(rng.laplace(0.0, scale, shape)))


def add_gaussian(value: Value, sigma: float, rng: NoiseSource) -> Value:
    """``value`` plus independent N(0, σ²) noise on every element."""
    checks.positive("sigma", sigma)
    return _noisy(value, lambda shape: np.asarray(rng.normal(0.0, sigma, shape)))


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
