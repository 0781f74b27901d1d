"""Reference models, built deterministically from a seed without touching torch's global RNG."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fedstream import checks

ModelBuilder = Callable[[int, int, Sequence[int]], nn.Module]


def mlp(in_features: int, out_features: int, hidden: Sequence[int] = (64, 64)) -> nn.Module:
    """Fully connected ReLU network: in → hidden… → out (logits)."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def linear(in_features: int, out_features: int, hidden: Sequence[int] = ()) -> nn.Module:
    """One affine layer: linear regression (MSE) or softmax regression (cross-entropy)."""
    return nn.Sequential(nn.Linear(in_features, out_features))


MODELS: dict[str, ModelBuilder] = {"mlp": mlp, "linear": linear}


def build_model(
    name: str,
    in_features: int,
    out_features: int,
    seed: int,
    hidden: Sequence[int] = (64, 64),
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Build model ``name`` with PyTorch's default initialisation drawn from ``seed``.

    torch's global generator is forked and restored, so building a model never changes the
    random numbers the rest of a program sees.
    """
    checks.one_of("model", name, list(MODELS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = MODELS[name](in_features, out_features, tuple(hidden))
    return module.to(dtype)


__all__ = ["MODELS", "build_model", "linear", "mlp"]
