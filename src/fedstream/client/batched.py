"""A cohort's forward pass written out for the simplest models, without ``vmap``.

A ``nn.Sequential`` of linear layers and elementwise activations (the MLP and softmax
regression most cross-device work trains) needs nothing from ``vmap`` that one batched
matmul per layer does not give: client k's layer is ``x_k @ W_kᵀ + b_k``, which
``torch.matmul`` over (K, B, in) × (K, in, out) computes for every client at once. Written
out, a step skips ``vmap``'s and ``functional_call``'s set-up on every call (about a third
of a small MLP's step), and gives the same bits as the vmapped module, forward and backward
(``tests/client/test_batched.py`` checks both against ``vmap``).

Any other layer (batch norm, dropout, convolutions, recurrent or custom modules) leaves the
model to ``vmap`` (``client.vectorized``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

TensorDict = dict[str, torch.Tensor]
BatchedForward = Callable[[TensorDict, torch.Tensor], torch.Tensor]

ELEMENTWISE = (
    nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.Softplus,
    nn.Identity,
)  # fmt: skip
"""Stateless layers that act on each number alone, so on a (K, B, …) tensor as on each
client's (B, …) one."""


def batched_forward(module: nn.Module) -> BatchedForward | None:
    """The cohort's forward pass (state: (K, …) parameters by name; x: (K, B, in); out:
    (K, B, out)) for a ``nn.Sequential`` of ``nn.Linear`` and ``ELEMENTWISE`` layers, or
    ``None`` for any other model."""
    if type(module) is not nn.Sequential or len(module) == 0:
        return None
    steps: list[Callable[[TensorDict, torch.Tensor], torch.Tensor]] = []
    for name, layer in module.named_children():
        if type(layer) is nn.Linear:
            steps.append(_linear(name, layer.bias is not None))
        elif type(layer) in ELEMENTWISE:
            steps.append(_elementwise(layer))
        else:
            return None
    if any(True for _ in module.buffers()):
        return None

    def forward(state: TensorDict, x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(state, x)
        return x

    return forward


def _linear(name: str, bias: bool) -> Callable[[TensorDict, torch.Tensor], torch.Tensor]:
    """Each client's ``x_k @ W_kᵀ (+ b_k)`` for weights (K, out, in) and biases (K, out)."""
    weight_name, bias_name = f"{name}.weight", f"{name}.bias"

    def step(state: TensorDict, x: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(x, state[weight_name].transpose(-1, -2))
        if not bias:
            return out
        b = state[bias_name]
        return out + b.view(b.shape[0], *([1] * (out.dim() - 2)), b.shape[-1])

    return step


def _elementwise(layer: nn.Module) -> Callable[[TensorDict, torch.Tensor], torch.Tensor]:
    """An ``ELEMENTWISE`` layer applied to every client's activations at once."""

    def step(state: TensorDict, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = layer(x)
        return out

    return step
