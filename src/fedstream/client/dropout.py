"""Dropout in vectorised cohorts, drawn per client from the client's own task seed.

One client trained alone draws its dropout masks from torch's generator, seeded from its
task seed (``torch_trainer.seeded_torch``): for each batch, each dropout layer in forward
order draws ``bernoulli(1 − p) / (1 − p)`` noise shaped like its input (elementwise
dropout) or like its input's first two dimensions (``Dropout1d/2d/3d``). A vmapped cohort
cannot give every client a generator of its own, so :class:`DropoutReplay` draws those
same masks beforehand, client by client from a generator seeded exactly as the client's
would be, and multiplies them in through forward hooks while the layers themselves are
switched off (p = 0). A client's masks are then the same whoever shares its cohort, on
whichever worker, and the same as the one-at-a-time trainer's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

ELEMENTWISE = (nn.Dropout,)
FEATUREWISE = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
OTHER_RANDOM = (nn.AlphaDropout, nn.FeatureAlphaDropout, nn.RReLU)


def unreplayable(module: nn.Module) -> list[str]:
    """The random layers whose draws cannot be replayed per client (alpha dropout, RReLU)."""
    return [n for n, m in module.named_modules() if isinstance(m, OTHER_RANDOM)]


class DropoutReplay:
    """The dropout layers of ``module``, replayed per client (module docstring)."""

    def __init__(self, module: nn.Module) -> None:
        self.layers = [
            (name, layer)
            for name, layer in module.named_modules()
            if isinstance(layer, ELEMENTWISE + FEATUREWISE)
        ]
        self._masks: Mapping[str, torch.Tensor] | None = None
        self._rates = {name: layer.p for name, layer in self.layers}
        for name, layer in self.layers:
            layer.register_forward_hook(self._hook(name))

    def __bool__(self) -> bool:
        return bool(self.layers)

    def _hook(self, name: str) -> Any:
        def apply(layer: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
            if self._masks is None or not layer.training:
                return None
            return output * self._masks[name]

        return apply

    @contextmanager
    def switched_off(self) -> Iterator[None]:
        """The layers draw nothing (p = 0) while the replayed masks, drawn at the layers'
        own rates, stand in for them."""
        self._rates = {name: layer.p for name, layer in self.layers}
        for _, layer in self.layers:
            layer.p = 0.0
        try:
            yield
        finally:
            for name, layer in self.layers:
                layer.p = self._rates[name]

    @contextmanager
    def applying(self, masks: Mapping[str, torch.Tensor]) -> Iterator[None]:
        """Inside the vmapped forward: each layer multiplies its output by its mask."""
        self._masks = masks
        try:
            yield
        finally:
            self._masks = None

    def input_shapes(self, module: nn.Module, example: torch.Tensor) -> dict[str, torch.Size]:
        """Each layer's input shape past the batch dimension, read from one forward pass in
        eval mode (which changes no running statistic)."""
        shapes: dict[str, torch.Size] = {}
        handles = [
            layer.register_forward_hook(
                lambda _m, inputs, _o, name=name: shapes.__setitem__(name, inputs[0].shape[1:])
            )
            for name, layer in self.layers
        ]
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                module(example)
        finally:
            module.train(was_training)
            for handle in handles:
                handle.remove()
        return shapes

    def draw(
        self,
        generators: Sequence[torch.Generator],
        lengths: Sequence[int],
        width: int,
        shapes: Mapping[str, torch.Size],
        dtype: torch.dtype,
    ) -> dict[str, torch.Tensor]:
        """One step's masks, (clients, width, …) per layer: client k's first ``lengths[k]``
        rows drawn from its generator, layer after layer in forward order (as its own
        forward pass would draw them); a client without a batch draws nothing."""
        masks = {}
        noise_shapes = {}
        for name, layer in self.layers:
            shape = shapes[name]
            feature = isinstance(layer, FEATUREWISE)
            noise_shapes[name] = (shape[0], *([1] * (len(shape) - 1))) if feature else tuple(shape)
            masks[name] = torch.zeros((len(lengths), width, *noise_shapes[name]), dtype=dtype)
        for k, (generator, length) in enumerate(zip(generators, lengths, strict=True)):
            if length == 0:
                continue
            for name, _ in self.layers:
                keep = 1.0 - self._rates[name]
                noise = torch.empty((length, *noise_shapes[name]), dtype=dtype)
                if keep == 0:
                    noise.zero_()
                else:
                    noise.bernoulli_(keep, generator=generator).div_(keep)
                masks[name][k, :length] = noise
        return masks
