"""Synthetic(α, β): the federated data generator of the FedProx paper (Li et al., MLSys 2020).

For each client k:
    u_k ~ N(0, α),  B_k ~ N(0, β)
    W_k ~ N(u_k, 1) of shape (60, 10),  b_k ~ N(u_k, 1) of shape (10,)
    v_k ~ N(B_k, 1) of shape (60,),  x ~ N(v_k, Σ) with Σ = diag(j^-1.2), j = 1…60
    y = argmax(x·W_k + b_k)
with n_k = ⌊lognormal(4, 2)⌋ + 50 examples (or a fixed ``samples`` per client, for
cross-device workloads of many small clients). α controls how much the clients' models differ,
β how much their data differ. The IID variant draws one W, b ~ N(0, 1) for everyone and
x ~ N(0, Σ). (N(μ, σ) here is normal with mean μ and standard deviation σ, as numpy draws it
in the paper's generator.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from fedstream import checks

Array = npt.NDArray[Any]
NUM_FEATURES = 60
NUM_CLASSES = 10


def synthetic_clients(
    num_clients: int,
    alpha: float,
    beta: float,
    rng: np.random.Generator,
    iid: bool = False,
    samples: int | None = None,
) -> tuple[Array, Array, Array]:
    """Every client's examples back to back, drawn as in the module docstring: x float32
    (Σn_k, 60), y int64 (Σn_k,), and the sizes n_k (client k's rows follow client k−1's).
    Written straight into the pooled arrays, so 100,000 clients need no per-client copy."""
    checks.positive_int("num_clients", num_clients)
    checks.non_negative("synthetic_alpha", alpha)
    checks.non_negative("synthetic_beta", beta)
    if samples is None:
        sizes = rng.lognormal(4, 2, num_clients).astype(np.int64) + 50
    else:
        checks.positive_int("synthetic_samples", samples)
        sizes = np.full(num_clients, samples, dtype=np.int64)
    scale = np.sqrt(np.power(np.arange(1, NUM_FEATURES + 1, dtype=np.float64), -1.2))
    if iid:
        shared_w = rng.normal(0, 1, (NUM_FEATURES, NUM_CLASSES))
        shared_b = rng.normal(0, 1, NUM_CLASSES)
    model_means = rng.normal(0, alpha, num_clients)
    data_means = rng.normal(0, beta, num_clients)
    x_all = np.empty((int(sizes.sum()), NUM_FEATURES), dtype=np.float32)
    y_all = np.empty(len(x_all), dtype=np.int64)
    start = 0
    for k in range(num_clients):
        if iid:
            w, b, centre = shared_w, shared_b, np.zeros(NUM_FEATURES)
        else:
            w = rng.normal(model_means[k], 1, (NUM_FEATURES, NUM_CLASSES))
            b = rng.normal(model_means[k], 1, NUM_CLASSES)
            centre = rng.normal(data_means[k], 1, NUM_FEATURES)
        # Σ is diagonal, so x = v_k + √diag(Σ)·z with z ~ N(0, I)
        x = centre + scale * rng.standard_normal((int(sizes[k]), NUM_FEATURES))
        end = start + len(x)
        x_all[start:end] = x  # rounded to float32 here; labels come from the float64 draw
        y_all[start:end] = np.argmax(x @ w + b, axis=1)
        start = end
    return x_all, y_all, sizes
