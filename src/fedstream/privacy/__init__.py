"""Differential privacy: mechanisms, clipping, a Rényi-DP accountant, and the DP-FedAvg
wrapper over any sum-based strategy."""

from fedstream.privacy.accountant import (
    DEFAULT_ORDERS,
    PrivacyLedger,
    epsilon_from_rdp,
    rdp_sampled_gaussian,
)
from fedstream.privacy.clipping import clip_l2
from fedstream.privacy.dp import (
    DP_LEVELS,
    DifferentialPrivacy,
    next_clip,
    privatize_update,
    update_noise_multiplier,
)
from fedstream.privacy.mechanisms import (
    SecureGenerator,
    add_gaussian,
    add_laplace,
    discrete_gaussian,
    discrete_gaussian_release,
    gaussian_delta,
    gaussian_sigma_analytic,
    gaussian_sigma_classic,
    laplace_scale,
)

__all__ = [
    "DEFAULT_ORDERS",
    "DP_LEVELS",
    "DifferentialPrivacy",
    "PrivacyLedger",
    "SecureGenerator",
    "add_gaussian",
    "add_laplace",
    "clip_l2",
    "discrete_gaussian",
    "discrete_gaussian_release",
    "epsilon_from_rdp",
    "gaussian_delta",
    "gaussian_sigma_analytic",
    "gaussian_sigma_classic",
    "laplace_scale",
    "next_clip",
    "privatize_update",
    "rdp_sampled_gaussian",
    "update_noise_multiplier",
]
