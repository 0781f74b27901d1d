"""PyTorch adapter: train any ``nn.Module`` one client at a time with plain SGD."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from fedstream.client.base import FitTask
from fedstream.compression.pruning import prunable
from fedstream.data.base import ClientData, Task
from fedstream.params import Params
from fedstream.types import ClientUpdate, EvaluateResult


def params_from_module(module: nn.Module) -> Params:
    """A copy of the module's state (parameters and buffers) as ``Params``."""
    return Params({n: t.detach().cpu().numpy().copy() for n, t in module.state_dict().items()})


def module_layout(module: nn.Module) -> Params:
    """Empty arrays shaped and typed like the module's state, to check ``Params`` against."""
    return Params(
        {n: np.empty(tuple(t.shape), dtype=_numpy_dtype(t)) for n, t in module.state_dict().items()}
    )


def check_layout(layout: Params, params: Params) -> None:
    """Raise ``ParamsMismatchError`` naming the difference if ``params`` does not fit ``layout``."""
    if params.spec != layout.spec:
        layout.check_compatible(params, "model params")


def _numpy_dtype(tensor: torch.Tensor) -> np.dtype[Any]:
    return np.dtype(torch.empty(0, dtype=tensor.dtype).numpy().dtype)


def pruning_masks(params: Params) -> dict[str, torch.Tensor]:
    """Name → 0/1 mask of the entries a pruned weight tensor keeps (its non-zeros), for
    the tensors pruning applies to; training multiplies by it after each step so that
    pruned weights stay zero."""
    return {
        name: torch.from_numpy((array != 0).astype(array.dtype))
        for name, array in params.items()
        if prunable(array)
    }


def per_sample_loss(task: Task, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss of each example, shape (batch,): cross-entropy on logits, or squared error."""
    if task == "classification":
        return F.cross_entropy(outputs, targets, reduction="none")
    return (outputs.squeeze(-1) - targets) ** 2


def mean_loss(task: Task, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean loss over a batch, with the reduction fused into the loss kernel."""
    if task == "classification":
        return F.cross_entropy(outputs, targets)
    return F.mse_loss(outputs.squeeze(-1), targets)


def evaluation_metrics(
    task: Task, outputs: torch.Tensor, targets: torch.Tensor
) -> dict[str, float]:
    """Mean loss, plus accuracy for classification."""
    metrics = {"loss": float(per_sample_loss(task, outputs, targets).mean())}
    if task == "classification":
        metrics["accuracy"] = float((outputs.argmax(-1) == targets).double().mean())
    return metrics


def batch_slices(num_examples: int, batch_size: int) -> list[slice]:
    """Consecutive batches over ``num_examples`` (batch_size 0 = one full batch)."""
    size = batch_size or num_examples
    return [slice(start, start + size) for start in range(0, num_examples, size)]


class TorchTrainer:
    """Trains a shared ``nn.Module`` skeleton on one client at a time.

    Each epoch shuffles with ``np.random.default_rng(task.config.seed)``, so the batches
    depend only on the task, not on the process or the order clients run in. The update is
    plain SGD on mean batch loss (+ μ/2·‖w − w_global‖² when ``proximal_mu > 0``), or
    DP-SGD when the task asks for sample-level DP.
    """

    def __init__(self, module: nn.Module, task: Task) -> None:
        self.module = module
        self.task: Task = task
        self.layout = module_layout(module)
        self._names = [n for n, _ in module.named_parameters()]
        # numpy views of the module's own storage: loading params is one copy per tensor
        self._storage = {n: t.numpy() for n, t in module.state_dict().items()}

    def _load(self, params: Params) -> None:
        check_layout(self.layout, params)
        for name, view in self._storage.items():
            view[...] = params[name]

    def fit(self, params: Params, task: FitTask, data: ClientData) -> ClientUpdate:
        config = task.config
        if data.num_train == 0:
            raise ValueError(f"client {task.client_id!r} has no training examples")
        self._load(params)
        x = torch.from_numpy(data.x_train)
        y = torch.from_numpy(data.y_train)
        weights = [p for _, p in self.module.named_parameters()]
        if not self.module.training:
            self.module.train()
        if config.payload == "gradient":
            loss = mean_loss(self.task, self.module(x), y)
            grads = torch.autograd.grad(loss, weights)
            payload = Params(
                {n: g.detach().numpy() for n, g in zip(self._names, grads, strict=True)}
            )
            return ClientUpdate(
                task.client_id, task.round, payload, float(data.num_train), {"loss": loss.item()}
            )

        if config.sample_dp is not None:
            return self._fit_dp_sgd(params, task, x, y)
        anchors = [w.detach().clone() for w in weights] if config.proximal_mu > 0 else []
        masks = pruning_masks(params) if config.masked else {}
        rng = np.random.default_rng(config.seed)
        losses: list[torch.Tensor] = []
        for _ in range(config.local_epochs):
            order = torch.from_numpy(rng.permutation(data.num_train))
            for batch in batch_slices(data.num_train, config.batch_size):
                index = order[batch]
                loss = mean_loss(self.task, self.module(x[index]), y[index])
                losses.append(loss.detach())
                grads = torch.autograd.grad(loss, weights)
                with torch.no_grad():
                    for k, (w, g) in enumerate(zip(weights, grads, strict=True)):
                        if anchors:  # ∇ μ/2·‖w − w_global‖² = μ·(w − w_global)
                            g = g + config.proximal_mu * (w - anchors[k])
                        w.add_(g, alpha=-config.lr)
                        if self._names[k] in masks:
                            w.mul_(masks[self._names[k]])
        delta = Params({n: self._storage[n] - params[n] for n in params})
        return ClientUpdate(
            task.client_id,
            task.round,
            delta,
            float(data.num_train),
            {"loss": torch.stack(losses).mean().item()},
        )

    def _fit_dp_sgd(
        self, params: Params, task: FitTask, x: torch.Tensor, y: torch.Tensor
    ) -> ClientUpdate:
        """DP-SGD (``FitConfig.sample_dp``): Poisson-sampled steps, each example's gradient
        clipped to L2 norm C over all parameters, N(0, (z·C)²) added to their sum, divided
        by the expected batch size q·n. Per-example gradients come from ``torch.func``
        (vmap over ``grad``), which needs a model vmap can batch (no recurrent layers)."""
        config = task.config
        dp = config.sample_dp
        assert dp is not None
        count = x.shape[0]
        rng = np.random.default_rng(config.seed)
        # plain tensors sharing the module's storage: updating them updates the module
        weights = {n: torch.from_numpy(self._storage[n]) for n in self._names}
        anchors = {n: w.clone() for n, w in weights.items()} if config.proximal_mu > 0 else {}
        masks = pruning_masks(params) if config.masked else {}

        def example_loss(
            w: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor
        ) -> torch.Tensor:
            out = functional_call(self.module, w, (xi.unsqueeze(0),))
            return per_sample_loss(self.task, out, yi.unsqueeze(0)).sum()

        per_example = vmap(grad_and_value(example_loss), in_dims=(None, 0, 0))
        losses: list[float] = []
        for _ in range(dp.steps):
            chosen = torch.from_numpy(np.flatnonzero(rng.random(count) < dp.sampling_rate))
            summed = {n: torch.zeros_like(w) for n, w in weights.items()}
            if len(chosen) > 0:
                grads, loss = per_example(weights, x[chosen], y[chosen])
                norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
                factor = dp.clip / torch.clamp(norms, min=dp.clip)  # min(1, C/‖g‖), 0-safe
                summed = {n: torch.tensordot(factor, g, dims=1) for n, g in grads.items()}
                losses.append(float(loss.mean()))
            with torch.no_grad():
                for name, w in weights.items():
                    noise = rng.normal(0.0, dp.noise_multiplier * dp.clip, tuple(w.shape))
                    g = (summed[name] + torch.from_numpy(noise).to(w.dtype)) / (
                        dp.sampling_rate * count
                    )
                    if anchors:
                        g = g + config.proximal_mu * (w - anchors[name])
                    w.sub_(g, alpha=config.lr)
                    if name in masks:
                        w.mul_(masks[name])
        delta = Params({n: self._storage[n] - params[n] for n in params})
        metrics = {"loss": float(np.mean(losses))} if losses else {}
        return ClientUpdate(task.client_id, task.round, delta, float(count), metrics)

    def evaluate(
        self, params: Params, client_id: str, round_number: int, data: ClientData
    ) -> EvaluateResult:
        self._load(params)
        if data.num_test == 0:
            return EvaluateResult(client_id, round_number, 0, {})
        self.module.eval()
        with torch.inference_mode():
            outputs = self.module(torch.from_numpy(data.x_test))
        metrics = evaluation_metrics(self.task, outputs, torch.from_numpy(data.y_test))
        return EvaluateResult(client_id, round_number, data.num_test, metrics)
