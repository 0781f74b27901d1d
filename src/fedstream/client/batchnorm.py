"""Batch norm in vectorised cohorts: each client's statistics over its own real rows.

A cohort pads every client's batch to the widest one. A batch-norm layer run over a padded
batch would count the padding in its mean and variance, so the vectorised trainer used to
run one pass per distinct batch length. Inside :meth:`MaskedBatchNorm.over`, every
batch-norm layer instead computes its statistics over the rows the client's row mask
marks (its real examples): the same mean, biased variance for normalising and unbiased
variance for the running estimate that ``nn.BatchNorm*`` computes over those rows alone,
so the whole cohort takes one pass a step. A client with no rows this step (no batch, or
one example under ``SINGLE_EXAMPLE_RULE``) leaves its running statistics and batch count
as they were, as the one-at-a-time trainer skips the batch.

The arithmetic is the layer's, summed in another order: equal to float rounding, not bit
for bit (``tests/client/test_batchnorm.py`` compares against ``nn.BatchNorm2d`` on the
real rows, in float64).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class MaskedBatchNorm:
    """The batch-norm layers of ``module``, normalising over masked rows (module docstring)."""

    def __init__(self, module: nn.Module) -> None:
        self.layers = [m for m in module.modules() if isinstance(m, _BatchNorm)]

    def __bool__(self) -> bool:
        return bool(self.layers)

    @contextmanager
    def over(self, rows: torch.Tensor) -> Iterator[None]:
        """Inside the vmapped forward: each layer's statistics come from the rows where
        ``rows`` (the client's (batch,) 0/1 mask) is 1."""
        for layer in self.layers:
            layer.forward = partial(masked_batch_norm, layer, rows)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for layer in self.layers:
                del layer.forward


def masked_batch_norm(layer: _BatchNorm, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``layer`` in training on ``x`` (batch, channels, …), with its batch statistics over
    the rows where ``rows`` is 1; its running statistics updated as the layer updates them,
    unless no row is marked."""
    if not layer.training and layer.track_running_stats:  # the running statistics: no batch
        out: torch.Tensor = _BatchNorm.forward(layer, x)
        return out
    layer._check_input_dim(x)  # type: ignore[no-untyped-call]
    channel = (1, -1, *([1] * (x.dim() - 2)))
    reduced = [0, *range(2, x.dim())]
    weights = rows.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
    count = rows.to(x.dtype).sum() * (x[0, 0].numel())  # values per channel
    safe = count.clamp(min=1.0)
    mean = (x * weights).sum(reduced) / safe
    centred = x - mean.view(channel)
    variance = (centred.square() * weights).sum(reduced) / safe
    out = centred * torch.rsqrt(variance + layer.eps).view(channel)
    if layer.affine:
        out = out * layer.weight.view(channel) + layer.bias.view(channel)
    if layer.track_running_stats and layer.running_mean is not None:
        _update_running(layer, mean.detach(), variance.detach(), count)
    return out


def _update_running(
    layer: _BatchNorm, mean: torch.Tensor, variance: torch.Tensor, count: torch.Tensor
) -> None:
    """The layer's running mean and (unbiased) variance moved towards this batch's, and its
    batch count up by one, for a client with rows; a client without stays as it was."""
    assert layer.running_mean is not None and layer.running_var is not None
    active = count > 0
    tracked = layer.num_batches_tracked
    if tracked is not None:
        tracked.add_(active.to(tracked.dtype))
    if layer.momentum is None:  # a cumulative average over the batches seen
        assert tracked is not None
        factor = 1.0 / tracked.clamp(min=1).to(mean.dtype)
    else:
        factor = torch.as_tensor(layer.momentum, dtype=mean.dtype)
    unbiased = variance * count / (count - 1).clamp(min=1.0)
    new_mean = (1 - factor) * layer.running_mean + factor * mean
    new_var = (1 - factor) * layer.running_var + factor * unbiased
    layer.running_mean.copy_(torch.where(active, new_mean, layer.running_mean))
    layer.running_var.copy_(torch.where(active, new_var, layer.running_var))
