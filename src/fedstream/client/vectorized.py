"""Train a cohort of clients that share one architecture in a single batched pass.

The model is called functionally (``torch.func.functional_call``) with a separate copy of
the parameters and buffers per client; the forward pass is vmapped over clients and one
backward pass gives every client's gradient. Clients hold different numbers of examples,
so their data is padded to the largest client and each example carries a mask: a
client's batch loss is the mean over its real examples only, and a client with no batch
left in a step is not updated at all (its proximal term would otherwise still move it).
Batches are drawn with exactly the same generator calls as ``TorchTrainer``, so both give
the same updates up to float rounding.

Models people use:

- **BatchNorm**: each client has its own running statistics (batched buffers, updated in
  place under vmap). Batch statistics would count padded rows, so each batch-norm layer
  takes its statistics over the client's real rows only (``client.batchnorm``): one pass
  a step for the whole cohort, equal to the layer's own arithmetic up to float rounding.
- **Recurrent layers** (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``): torch's fused kernels have
  no vmap rule, so inside a cohort each runs unrolled as batched matmuls with a written-out
  backward pass (``client.recurrent``), equal to the fused kernels to float rounding.
- **Dropout** (``nn.Dropout``, ``Dropout1d/2d/3d``): each client's masks are drawn from a
  generator seeded as its own would be when trained alone (``client.dropout``), so they
  are the one-at-a-time trainer's masks, whoever shares the cohort and on whichever
  worker. Any other randomness a model draws inside vmap (``randomness="different"``)
  comes from torch's generator seeded from the cohort's task seeds: reproducible, but
  not independent of the cohort.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.func import functional_call, vmap

from fedstream.client.algorithms import STEPS
from fedstream.client.base import FitTask
from fedstream.client.batched import batched_forward
from fedstream.client.batchnorm import MaskedBatchNorm
from fedstream.client.dropout import DropoutReplay, unreplayable
from fedstream.client.recurrent import UnrolledRecurrence, unbatchable
from fedstream.client.shuffles import epoch_shuffles
from fedstream.client.torch_trainer import (
    TorchTrainer,
    check_layout,
    frozen_names,
    per_sample_loss,
    pruning_masks,
    seeded_torch,
    torch_seed,
)
from fedstream.data.base import (
    ClientData,
    Task,
    cohort_in_order,
    cohort_train_sizes,
    padded_train,
)
from fedstream.errors import ConfigError
from fedstream.params import Params
from fedstream.types import ClientUpdate, EvaluateResult, UpdateBlock

TensorDict = dict[str, torch.Tensor]


class VectorizedTrainer:
    """A ``CohortTrainer``: ``fit_cohort`` trains all given clients at once.

    Every task of a cohort must share local epochs, batch size, lr, μ and payload kind
    (only the seed may differ). Single-client ``fit`` and ``evaluate`` go to the sequential
    ``TorchTrainer`` on the same module.
    """

    def __init__(self, module: nn.Module, task: str) -> None:
        reason = self.unsupported(module)
        if reason is not None:
            raise ConfigError("trainer", "vectorized", f"{reason}; use trainer='sequential'")
        self.module = module
        self.sequential = TorchTrainer(module, task, device="cpu")
        self.task: Task = self.sequential.task
        self._parameters = [n for n, _ in module.named_parameters()]
        # the buffers the federation holds; a non-persistent one (a transformer's position
        # ids) is a constant the module keeps, and functional_call reads it from there
        persistent = set(module.state_dict())
        self._buffers = [n for n, _ in module.named_buffers() if n in persistent]
        self._batch_norm = MaskedBatchNorm(module)
        self._dropout = DropoutReplay(module)
        self._recurrence = UnrolledRecurrence(module)
        # vmapped over clients; the masks go in only where there is dropout, the rows only
        # where there is batch norm (each pytree argument costs vmap time on every call)
        self._forward_normed = vmap(self._normed_forward, randomness="different")
        self._forward_masked = vmap(self._functional_forward, randomness="different")
        self._forward_plain = vmap(self._plain_forward, randomness="different")
        self._forward_direct = batched_forward(module)  # the same bits, without vmap

    def _normed_forward(
        self, state: TensorDict, masks: TensorDict, rows: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        """One client's forward pass, its batch norm over its real rows (``rows``, 0/1 per
        row of ``x``: ``client.batchnorm``) and its dropout masks applied."""
        with self._batch_norm.over(rows):
            return self._functional_forward(state, masks, x)

    def _functional_forward(
        self, state: TensorDict, masks: TensorDict, x: torch.Tensor
    ) -> torch.Tensor:
        """One client's forward pass, its dropout masks applied."""
        with self._dropout.applying(masks):
            return self._plain_forward(state, x)

    def _plain_forward(self, state: TensorDict, x: torch.Tensor) -> torch.Tensor:
        """One client's forward pass from its parameters and buffers (``state``)."""
        out: torch.Tensor = functional_call(self.module, state, (x,))
        return out

    @staticmethod
    def unsupported(module: nn.Module) -> str | None:
        """Why ``module`` cannot be trained vectorised, or ``None`` if it can: recurrent
        layers run unrolled only in the forms ``client.recurrent`` covers, and alpha
        dropout and RReLU draw in ways that cannot be replayed per client
        (``client.dropout``)."""
        recurrent = unbatchable(module)
        if recurrent is not None:
            return recurrent
        frozen = frozen_names(module)
        if frozen:
            return (
                "a model without frozen parameters (a frozen pretrained base trains one client "
                f"at a time: its cost is the base's own matmuls, not per-call overhead); this "
                f"one has {len(frozen)}, e.g. {frozen[0]!r}"
            )
        transformers = sys.modules.get("transformers")
        if transformers is not None:
            pretrained = [
                n or type(m).__name__
                for n, m in module.named_modules()
                if isinstance(m, transformers.PreTrainedModel)
            ]
            if pretrained:
                return (
                    "a model without Hugging Face transformers inside (their attention "
                    "draws its dropout inside the kernel, which cannot be replayed per "
                    f"client); this one has {pretrained[0]!r}"
                )
        random = unreplayable(module)
        if random:
            return f"a model without alpha dropout or RReLU layers; this one has {random}"
        return None

    def _gradients(
        self,
        weights: TensorDict,
        buffers: TensorDict,
        dropouts: TensorDict,
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[TensorDict, torch.Tensor]:
        """Every client's gradient of its masked mean batch loss, and that loss, shape (K,).
        ``buffers`` (K, …) are updated in place, as the layers update them in training.

        The clients' losses are independent, so one backward pass over their sum gives each
        client its own gradient; the forward pass alone is vmapped. This is about 1.5× faster
        than ``vmap(grad(...))``, whose per-call overhead dominates at these model sizes.
        """
        leaves = {n: w.detach().requires_grad_(True) for n, w in weights.items()}
        cohort, width = y.shape[0], y.shape[1]
        state = {**leaves, **buffers} if buffers else leaves
        if self._batch_norm:
            outputs = self._forward_normed(state, dropouts, mask, x)
        elif dropouts:
            outputs = self._forward_masked(state, dropouts, x)
        elif self._forward_direct is not None:
            outputs = self._forward_direct(state, x)
        else:
            outputs = self._forward_plain(state, x)
        losses = per_sample_loss(self.task, outputs.flatten(0, 1), y.flatten(0, 1))
        losses = losses.view(cohort, width)
        data_loss = (losses * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        grads = torch.autograd.grad(data_loss.sum(), list(leaves.values()))
        return dict(zip(leaves, grads, strict=True)), data_loss.detach()

    def _step_gradients(
        self,
        weights: TensorDict,
        buffers: TensorDict,
        x: torch.Tensor,
        y: torch.Tensor,
        step_mask: torch.Tensor,
        draws: _Draws | None,
    ) -> tuple[TensorDict, torch.Tensor]:
        """``_gradients`` for one step of every client, each client's dropout masks drawn
        from its own generator."""
        dropouts: TensorDict = {}
        if draws is not None:
            lengths = step_mask.sum(1).to(torch.int64).tolist()
            dropouts = draws.step(lengths, x.shape[1], step_mask.dtype)
        return self._gradients(weights, buffers, dropouts, x, y, step_mask)

    def fit(self, params: Params, task: FitTask, data: ClientData) -> ClientUpdate:
        return self.fit_cohort(params, [task], [data]).row(0)

    def evaluate(
        self, params: Params, client_id: str, round_number: int, data: ClientData
    ) -> EvaluateResult:
        return self.sequential.evaluate(params, client_id, round_number, data)

    def fit_cohort(
        self,
        params: Params,
        tasks: Sequence[FitTask],
        datasets: Sequence[ClientData],
        starts: Sequence[Params] | None = None,
    ) -> UpdateBlock:
        if not tasks:
            raise ValueError("fit_cohort needs at least one task")
        config = tasks[0].config
        if config.sample_dp is not None:  # per-example gradients: one client at a time
            return UpdateBlock.stack(
                [
                    self.sequential.fit(start, t, d)
                    for t, d, start in zip(
                        tasks, datasets, starts or [params] * len(tasks), strict=True
                    )
                ]
            )
        key = config.cohort_key()
        for task in tasks[1:]:
            if task.config.cohort_key() != key or task.frozen != tasks[0].frozen:
                raise ConfigError(
                    "cohort", task.client_id, "the same fit config as the rest of the cohort"
                )
        if len(datasets) != len(tasks):
            raise ValueError(f"fit_cohort got {len(datasets)} datasets for {len(tasks)} tasks")
        sizes = cohort_train_sizes(datasets)
        for task, size in zip(tasks, sizes.tolist(), strict=True):
            if size == 0:
                raise ValueError(f"client {task.client_id!r} has no training examples")
        check_layout(self.sequential.layout, params)
        for start in starts or ():
            check_layout(self.sequential.layout, start)
        # the cohort's own randomness (beyond the replayed dropout): from all its task seeds
        cohort_seed = 0
        for task in tasks:
            cohort_seed ^= task.config.seed
        with seeded_torch(cohort_seed), self._dropout.switched_off(), self._recurrence.unrolled():
            return self._fit_cohort(params, tasks, datasets, sizes, starts)

    def _fit_cohort(
        self,
        params: Params,
        tasks: Sequence[FitTask],
        datasets: Sequence[ClientData],
        sizes: npt.NDArray[np.int64],
        starts: Sequence[Params] | None,
    ) -> UpdateBlock:
        """Train the cohort with its clients ordered largest first, so that at every step
        the clients that still have a batch are a prefix: a step computes only them (views,
        no copies), and a cohort of uneven clients costs about the sum of their steps, not
        the largest client's steps times the cohort. The updates come back in task order."""
        order = np.argsort(-sizes, kind="stable")
        ranked = self._fit_ranked(
            params,
            [tasks[k] for k in order],
            cohort_in_order(datasets, order),
            sizes[order],
            None if starts is None else [starts[k] for k in order],
        )
        return ranked.take(np.argsort(order).tolist())

    def _fit_ranked(
        self,
        params: Params,
        tasks: Sequence[FitTask],
        datasets: Sequence[ClientData],
        sizes: npt.NDArray[np.int64],
        starts: Sequence[Params] | None,
    ) -> UpdateBlock:
        """``_fit_cohort`` for a cohort ordered by training examples (``sizes``), largest
        first."""
        config = tasks[0].config
        cohort = len(tasks)
        x, y = (torch.from_numpy(a) for a in padded_train(datasets))
        if starts is None:  # one start for all: (…) tensors that broadcast over clients
            anchor = {n: torch.from_numpy(np.array(params[n])) for n in params}
            weights = {n: _per_client(anchor[n], cohort) for n in self._parameters}
            buffers = {n: _per_client(anchor[n], cohort) for n in self._buffers}
        else:  # each client from its own start: (K, …) tensors
            anchor = {n: torch.from_numpy(np.stack([s[n] for s in starts])) for n in params}
            weights = {n: anchor[n].clone() for n in self._parameters}
            buffers = {n: anchor[n].clone() for n in self._buffers}
        # each step's client of each batch row, as a row of x flattened to (K × longest, …):
        # one index_select of whole rows, 2.6× faster than indexing x by (client, slot)
        firsts = (torch.arange(cohort) * x.shape[1]).view(1, cohort, 1)
        flat_x = x.reshape(-1, *x.shape[2:])
        flat_y = y.reshape(-1, *y.shape[2:])
        real = weights[self._parameters[0]].dtype  # x may hold token ids: masks, losses in this
        if not self.module.training:
            self.module.train()
        draws = _Draws(self._dropout, self.module, x[0, :1], tasks) if self._dropout else None

        if config.payload == "gradient":
            mask = torch.from_numpy(np.arange(x.shape[1])[None, :] < sizes[:, None]).to(real)
            grads, loss = self._step_gradients(weights, buffers, x, y, mask, draws)
            return _block(tasks, sizes, {n: g.numpy() for n, g in grads.items()}, loss)

        masks = pruning_masks(params) if config.masked else {}
        corrections = self._corrections(tasks)
        frozen = set(tasks[0].frozen)
        shuffles = epoch_shuffles([t.config.seed for t in tasks], sizes, config.local_epochs)
        loss_sum = torch.zeros(cohort, dtype=real)
        step_count = torch.zeros(cohort, dtype=real)
        mu = config.proximal_mu
        own_anchor = starts is not None
        for epoch in range(config.local_epochs):
            orders = [own[epoch] for own in shuffles]
            index, mask = _epoch_batches(orders, sizes, config.batch_size)
            reach = mask.any(2).sum(1).tolist()  # clients with a batch at each step: a prefix
            mask = mask.to(real)
            picked = (firsts + index).view(-1)  # the epoch's batches, (steps, K, B, …)
            xs = flat_x.index_select(0, picked).view(*index.shape, *x.shape[2:])
            ys = flat_y.index_select(0, picked).view(*index.shape, *y.shape[2:])
            for step in range(index.shape[0]):
                k = int(reach[step])
                step_mask = mask[step, :k]
                # every client of the prefix has a batch and steps (its scale is lr), unless
                # batch norm's SINGLE_EXAMPLE_RULE leaves a client's lone example out
                active: torch.Tensor | None = None
                if self._batch_norm:
                    step_mask = step_mask * (step_mask.sum(1, keepdim=True) > 1)
                    active = (step_mask.sum(1) > 0).to(real)
                xb, yb = xs[step, :k], ys[step, :k]
                live = {n: w[:k] for n, w in weights.items()}
                grads, loss = self._step_gradients(
                    live, _prefix(buffers, k), xb, yb, step_mask, draws
                )
                if mu:  # ∇ μ/2·‖w_k − w_global‖² = μ·(w_k − w_global)
                    start = _prefix(anchor, k) if own_anchor else anchor
                    grads = {n: g + mu * (live[n] - start[n]) for n, g in grads.items()}
                if corrections:  # SCAFFOLD: + (c − c_k)
                    grads = {n: g + corrections[n][:k] for n, g in grads.items()}
                scale = _broadcast(active * config.lr) if active is not None else None
                for n, w in live.items():
                    if n in frozen:
                        continue
                    # the same bits either way: lr × 1 is lr
                    change = grads[n] * config.lr if scale is None else scale(w) * grads[n]
                    if n in masks:
                        weights[n][:k] = (w - change) * masks[n]
                    else:
                        w.sub_(change)  # a view: the step in place
                if active is None:
                    loss_sum[:k] += loss
                    step_count[:k] += 1.0
                else:
                    loss_sum[:k] += loss * active
                    step_count[:k] += active
        final = {**weights, **buffers}
        deltas = {n: (final[n] - anchor[n]).numpy() for n in params}
        steps = step_count if config.algorithm != "sgd" else None
        return _block(tasks, sizes, deltas, loss_sum / step_count, step_count > 0, steps)

    def _corrections(self, tasks: Sequence[FitTask]) -> TensorDict:
        """Each client's gradient correction (SCAFFOLD), (K, …) per parameter; empty when
        no task has one. A parameter a task's correction does not name gets none."""
        if all(t.correction is None for t in tasks):
            return {}
        layout = self.sequential.layout
        return {
            name: torch.from_numpy(
                np.stack(
                    [
                        np.asarray(t.correction[name])
                        if t.correction is not None and name in t.correction
                        else np.zeros(layout[name].shape, layout[name].dtype)
                        for t in tasks
                    ]
                )
            )
            for name in self._parameters
        }


class _Draws:
    """A cohort's dropout masks, step by step, each client's from a generator seeded as
    its own would be when trained alone (``client.dropout``)."""

    def __init__(
        self,
        replay: DropoutReplay,
        module: nn.Module,
        example: torch.Tensor,
        tasks: Sequence[FitTask],
    ) -> None:
        self.replay = replay
        self.shapes = replay.input_shapes(module, example)
        self.generators = [torch.Generator().manual_seed(torch_seed(t.config.seed)) for t in tasks]

    def step(self, lengths: Sequence[int], width: int, dtype: torch.dtype) -> TensorDict:
        """The masks of the first ``len(lengths)`` clients (a step's prefix of the cohort)."""
        generators = self.generators[: len(lengths)]
        return self.replay.draw(generators, lengths, width, self.shapes, dtype)


def _per_client(tensor: torch.Tensor, cohort: int) -> torch.Tensor:
    """A (cohort, …) copy of ``tensor`` for every client to train its own."""
    return tensor.expand(cohort, *tensor.shape).clone()


def _prefix(tensors: TensorDict, k: int) -> TensorDict:
    """The first ``k`` clients' rows of (K, …) tensors, as views (in-place updates reach
    the cohort's tensors: batch norm's running statistics)."""
    return {n: t[:k] for n, t in tensors.items()}


def _epoch_batches(
    orders: Sequence[np.ndarray], sizes: np.ndarray, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index (steps, K, B) and mask (steps, K, B) for one epoch: client k's step s batch is
    the s-th slice of its epoch's shuffle ``orders[k]`` (``client.shuffles``: the draw
    ``TorchTrainer`` makes). Each order is laid out along a (steps × B)-wide row, so its
    batches are the row's consecutive B-wide pieces (``batch_slices``)."""
    widest = int(batch_size or sizes.max())
    steps = -(-int(sizes.max()) // widest)
    counts = np.asarray(sizes, dtype=np.int64)
    clients = np.repeat(np.arange(len(counts)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    positions = np.arange(len(clients)) - starts  # each example's place in its client's order
    index = np.zeros((len(counts), steps * widest), dtype=np.int64)
    index[clients, positions] = np.concatenate(orders) if len(orders) else clients
    mask = np.arange(steps * widest)[None, :] < counts[:, None]
    shape = (len(counts), steps, widest)
    return (
        torch.from_numpy(index.reshape(shape).transpose(1, 0, 2).copy()),
        torch.from_numpy(mask.reshape(shape).transpose(1, 0, 2).copy()),
    )


def _broadcast(per_client: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Reshape a (K,) vector to broadcast against a (K, …) tensor like the one given."""
    return lambda like: per_client.view(-1, *([1] * (like.dim() - 1)))


def _block(
    tasks: Sequence[FitTask],
    sizes: np.ndarray,
    payloads: dict[str, np.ndarray],
    loss: torch.Tensor,
    trained: torch.Tensor | None = None,
    steps: torch.Tensor | None = None,
) -> UpdateBlock:
    """The cohort's updates as one block, (K, …) payloads in the tasks' order; a client
    that took no step (``trained`` false) reports no loss; with ``steps`` each reports how
    many steps it took (``client.algorithms``)."""
    losses = loss.tolist()  # one conversion, not a tensor index per client
    took = trained.tolist() if trained is not None else [True] * len(tasks)
    counts = steps.tolist() if steps is not None else None
    metrics = []
    for k in range(len(tasks)):
        one = {"loss": losses[k]} if took[k] else {}
        if counts is not None:
            one[STEPS] = counts[k]
        metrics.append(one)
    return UpdateBlock(
        tuple(t.client_id for t in tasks),
        tasks[0].round,
        Params(payloads),
        sizes.astype(np.float64),
        tuple(metrics),
    )
