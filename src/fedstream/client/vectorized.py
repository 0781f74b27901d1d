"""Train a cohort of clients that share one architecture in a single batched pass.

The model is called functionally (``torch.func.functional_call``) with a separate copy of
the parameters per client; the forward pass is vmapped over clients and one backward pass
gives every client's gradient. Clients hold different numbers of examples, so their data
is padded to the largest client and each example carries a mask: a client's batch loss is
the mean over its real examples only, and a client with no batch left in a step is not
updated at all (its proximal term would otherwise still move it). Batches are drawn with
exactly the same generator calls as ``TorchTrainer``, so both give the same updates up to
float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from fedstream.client.base import FitTask
from fedstream.client.torch_trainer import (
    TorchTrainer,
    batch_slices,
    check_layout,
    per_sample_loss,
    pruning_masks,
)
from fedstream.data.base import ClientData, Task
from fedstream.errors import ConfigError
from fedstream.params import Params
from fedstream.types import ClientUpdate, EvaluateResult

TensorDict = dict[str, torch.Tensor]


class VectorizedTrainer:
    """A ``CohortTrainer``: ``fit_cohort`` trains all given clients at once.

    Every task of a cohort must share local epochs, batch size, lr, μ and payload kind
    (only the seed may differ). Modules with buffers (e.g. batch norm) are refused, since
    their running statistics are not functional state. Single-client ``fit`` and
    ``evaluate`` go to the sequential ``TorchTrainer`` on the same module.
    """

    def __init__(self, module: nn.Module, task: Task) -> None:
        reason = self.unsupported(module)
        if reason is not None:
            raise ConfigError("trainer", "vectorized", f"{reason}; use trainer='sequential'")
        self.module = module
        self.task: Task = task
        self.sequential = TorchTrainer(module, task)
        self._forward = vmap(lambda weights, x: functional_call(self.module, weights, (x,)))

    @staticmethod
    def unsupported(module: nn.Module) -> str | None:
        """Why ``module`` cannot be trained vectorised, or ``None`` if it can: buffers (batch
        norm statistics) are not functional state, and torch.func has no batching rule for
        the fused RNN kernels."""
        buffers = [n for n, _ in module.named_buffers()]
        if buffers:
            return f"a model without buffers; this one has {buffers}"
        recurrent = [n for n, m in module.named_modules() if isinstance(m, nn.RNNBase)]
        if recurrent:
            return (
                "a model without recurrent layers (vmap cannot batch them); "
                f"this one has {recurrent}"
            )
        return None

    def _gradients(
        self,
        weights: TensorDict,
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[TensorDict, torch.Tensor]:
        """Every client's gradient of its masked mean batch loss, and that loss, shape (K,).

        The clients' losses are independent, so one backward pass over their sum gives each
        client its own gradient; the forward pass alone is vmapped. This is about 1.5× faster
        than ``vmap(grad(...))``, whose per-call overhead dominates at these model sizes.
        """
        leaves = {n: w.detach().requires_grad_(True) for n, w in weights.items()}
        cohort, width = y.shape[0], y.shape[1]
        outputs = self._forward(leaves, x)
        losses = per_sample_loss(self.task, outputs.flatten(0, 1), y.flatten(0, 1))
        losses = losses.view(cohort, width)
        data_loss = (losses * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        grads = torch.autograd.grad(data_loss.sum(), list(leaves.values()))
        return dict(zip(leaves, grads, strict=True)), data_loss.detach()

    def fit(self, params: Params, task: FitTask, data: ClientData) -> ClientUpdate:
        return self.fit_cohort(params, [task], [data])[0]

    def evaluate(
        self, params: Params, client_id: str, round_number: int, data: ClientData
    ) -> EvaluateResult:
        return self.sequential.evaluate(params, client_id, round_number, data)

    def fit_cohort(
        self, params: Params, tasks: Sequence[FitTask], datasets: Sequence[ClientData]
    ) -> list[ClientUpdate]:
        if not tasks:
            return []
        config = tasks[0].config
        if config.sample_dp is not None:  # per-example gradients: one client at a time
            return [self.sequential.fit(params, t, d) for t, d in zip(tasks, datasets, strict=True)]
        key = config.cohort_key()
        for task in tasks[1:]:
            if task.config.cohort_key() != key:
                raise ConfigError(
                    "cohort", task.client_id, "the same fit config as the rest of the cohort"
                )
        for task, data in zip(tasks, datasets, strict=True):
            if data.num_train == 0:
                raise ValueError(f"client {task.client_id!r} has no training examples")
        check_layout(self.sequential.layout, params)

        cohort = len(tasks)
        sizes = np.array([d.num_train for d in datasets])
        x = _pad([d.x_train for d in datasets])
        y = _pad([d.y_train for d in datasets])
        anchor = {n: torch.from_numpy(np.array(params[n])) for n in params}
        weights = {n: a.expand(cohort, *a.shape).clone() for n, a in anchor.items()}
        rows = torch.arange(cohort).unsqueeze(1)

        if config.payload == "gradient":
            mask = torch.from_numpy(np.arange(x.shape[1])[None, :] < sizes[:, None]).to(x.dtype)
            grads, loss = self._gradients(weights, x, y, mask)
            return _updates(tasks, sizes, {n: g.numpy() for n, g in grads.items()}, loss)

        masks = pruning_masks(params) if config.masked else {}
        generators = [np.random.default_rng(t.config.seed) for t in tasks]
        loss_sum = torch.zeros(cohort, dtype=x.dtype)
        step_count = torch.zeros(cohort, dtype=x.dtype)
        mu = config.proximal_mu
        for _ in range(config.local_epochs):
            index, mask = _epoch_batches(generators, sizes, config.batch_size)
            for step in range(index.shape[0]):
                step_mask = mask[step].to(x.dtype)
                active = (step_mask.sum(1) > 0).to(x.dtype)
                xb, yb = x[rows, index[step]], y[rows, index[step]]
                grads, loss = self._gradients(weights, xb, yb, step_mask)
                if mu:  # ∇ μ/2·‖w_k − w_global‖² = μ·(w_k − w_global)
                    grads = {n: g + mu * (weights[n] - anchor[n]) for n, g in grads.items()}
                scale = _broadcast(active * config.lr)
                weights = {n: w - scale(w) * grads[n] for n, w in weights.items()}
                if masks:  # pruned weights stay zero
                    weights = {n: w * masks[n] if n in masks else w for n, w in weights.items()}
                loss_sum += loss * active
                step_count += active
        deltas = {n: (w - anchor[n]).numpy() for n, w in weights.items()}
        return _updates(tasks, sizes, deltas, loss_sum / step_count)


def _pad(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack arrays of shape (n_k, …) into (K, max n_k, …), zero-padded."""
    longest = max(a.shape[0] for a in arrays)
    out = np.zeros((len(arrays), longest, *arrays[0].shape[1:]), dtype=arrays[0].dtype)
    for k, a in enumerate(arrays):
        out[k, : a.shape[0]] = a
    return torch.from_numpy(out)


def _epoch_batches(
    generators: Sequence[np.random.Generator], sizes: np.ndarray, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index (steps, K, B) and mask (steps, K, B) for one epoch: client k's step s batch is
    its s-th slice of a fresh permutation, the same draw ``TorchTrainer`` makes."""
    widest = int(batch_size or sizes.max())
    steps = max(len(batch_slices(int(n), batch_size)) for n in sizes)
    index = np.zeros((steps, len(sizes), widest), dtype=np.int64)
    mask = np.zeros((steps, len(sizes), widest), dtype=bool)
    for k, (rng, n) in enumerate(zip(generators, sizes, strict=True)):
        order = rng.permutation(int(n))
        for step, batch in enumerate(batch_slices(int(n), batch_size)):
            chunk = order[batch]
            index[step, k, : len(chunk)] = chunk
            mask[step, k, : len(chunk)] = True
    return torch.from_numpy(index), torch.from_numpy(mask)


def _broadcast(per_client: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Reshape a (K,) vector to broadcast against a (K, …) tensor like the one given."""
    return lambda like: per_client.view(-1, *([1] * (like.dim() - 1)))


def _updates(
    tasks: Sequence[FitTask],
    sizes: np.ndarray,
    payloads: dict[str, np.ndarray],
    loss: torch.Tensor,
) -> list[ClientUpdate]:
    return [
        ClientUpdate(
            task.client_id,
            task.round,
            Params({n: p[k] for n, p in payloads.items()}),
            float(sizes[k]),
            {"loss": float(loss[k])},
        )
        for k, task in enumerate(tasks)
    ]
