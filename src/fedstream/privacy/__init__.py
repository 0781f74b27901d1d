"""Differential privacy: mechanisms, clipping, and a Rényi-DP accountant."""

from fedstream.privacy.accountant import (
    DEFAULT_ORDERS,
    PrivacyLedger,
    epsilon_from_rdp,
    rdp_sampled_gaussian,
)
from fedstream.privacy.clipping import clip_l2
from fedstream.privacy.mechanisms import (
    SecureGenerator,
    add_gaussian,
    add_laplace,
    gaussian_delta,
    gaussian_sigma_analytic,
    gaussian_sigma_classic,
    laplace_scale,
)

__all__ = [
    "DEFAULT_ORDERS",
    "PrivacyLedger",
    "SecureGenerator",
    "add_gaussian",
    "add_laplace",
    "clip_l2",
    "epsilon_from_rdp",
    "gaussian_delta",
    "gaussian_sigma_analytic",
    "gaussian_sigma_classic",
    "laplace_scale",
    "rdp_sampled_gaussian",
]
