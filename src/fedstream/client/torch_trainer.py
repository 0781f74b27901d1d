"""PyTorch adapter: train any ``nn.Module``, one client at a time, the user's way.

``TorchTrainer(module, task)`` trains with plain SGD on the task's default loss
(cross-entropy on logits, or squared error). Each part can be the user's own:

- ``loss(outputs, targets) -> scalar tensor``: the mean loss of a batch;
- ``metrics(outputs, targets) -> {name: float}``: evaluation metrics (the loss is added);
- ``optimizer(parameters, lr) -> torch.optim.Optimizer``: a fresh optimiser per task;
- ``train(module, data, config, rng) -> {name: float}``: the whole local training loop,
  for anything the options above do not cover (it trains ``module`` in place and returns
  its training metrics);
- ``evaluate(module, data) -> (num_examples, {name: float})``: the whole evaluation;
- ``device``: ``"auto"`` (CUDA when present, else CPU) or any torch device.

Every random number a task uses comes from its seed: the batch order from
``np.random.default_rng(seed)``, and torch's own generator (dropout, augmentation, a user's
``torch.rand``) reseeded from it for the task and restored afterwards, so runs with dropout
are reproducible and resume bit for bit.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from fedstream.client.algorithms import STEPS
from fedstream.client.base import FitTask
from fedstream.client.recurrent import UnrolledRecurrence
from fedstream.compression.pruning import prunable
from fedstream.data.base import ClientData, Task
from fedstream.errors import ConfigError
from fedstream.params import Params
from fedstream.privacy.mechanisms import (
    DP_SGD_STREAM,
    NoiseSource,
    client_noise,
    discrete_gaussian_release,
)
from fedstream.types import ClientUpdate, EvaluateResult, FitConfig

TASKS: tuple[Task, ...] = ("classification", "regression")
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Metrics = Callable[[torch.Tensor, torch.Tensor], Mapping[str, float]]
OptimizerFactory = Callable[[Sequence[nn.Parameter], float], torch.optim.Optimizer]
TrainFunction = Callable[
    [nn.Module, ClientData, FitConfig, np.random.Generator], Mapping[str, float]
]
EvaluateFunction = Callable[[nn.Module, ClientData], tuple[int, Mapping[str, float]]]

EVAL_CHUNK = 1024
"""Rows per forward pass in evaluation (a transformer's activations grow with the rows)."""
TORCH_STREAM = 0x544F5243  # separates torch's generator seed from the batch-order stream
_GLOBAL_GENERATOR = threading.Lock()


def check_task(task: str) -> Task:
    """``task`` if it is one fedstream knows, else an error that suggests the nearest."""
    if task not in TASKS:
        close = difflib.get_close_matches(str(task), TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError("task", task, f"one of {list(TASKS)}{hint}")
    return task


@contextmanager
def seeded_torch(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run with torch's global generator (and ``device``'s, for a GPU) seeded from a task's
    ``seed``, then put it back. A lock keeps two threads of one process (a server and its
    clients in a test) from drawing from the one global generator at once. Only the
    generators in use are seeded: ``torch.manual_seed`` would also reach every GPU
    backend, which costs about a millisecond a call where there is none."""
    gpu = device is not None and device.type == "cuda"
    devices = [device.index or 0] if gpu and device is not None else []
    with _GLOBAL_GENERATOR, torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(torch_seed(seed))
        if gpu:
            torch.cuda.manual_seed(torch_seed(seed))
        yield


_MASK64 = (1 << 64) - 1


def torch_seed(seed: int) -> int:
    """The seed of torch's generator for a task with ``seed``: its own stream, apart from
    the batch order's, mixed by SplitMix64 (a few integer operations: this runs for every
    task, where a seeded numpy generator would cost more than a small model's step)."""
    z = ((int(seed) ^ TORCH_STREAM) + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1  # 63 bits


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when torch sees a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError("device", device, f"'auto', 'cpu', 'cuda' or 'cuda:N' ({exc})") from None


def frozen_names(module: nn.Module) -> tuple[str, ...]:
    """The parameters that do not train (``requires_grad=False``): a pretrained base under
    LoRA adapters, a frozen body under a trainable head. They are no part of the federation:
    every process builds them itself (from the same seed or the same weights on disk), so
    they are never sent, summed, checkpointed or served from the run store."""
    return tuple(n for n, p in module.named_parameters() if not p.requires_grad)


def federated_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's state that the federation shares and stores: every state entry
    (parameters and buffers) but the frozen parameters, as the module's own tensors."""
    frozen = set(frozen_names(module))
    state = module.state_dict(keep_vars=True)
    return {n: t for n, t in state.items() if n not in frozen} if frozen else state


def params_from_module(module: nn.Module) -> Params:
    """A copy of the module's federated state (``federated_tensors``) as ``Params``."""
    return Params(
        {n: t.detach().cpu().numpy().copy() for n, t in federated_tensors(module).items()}
    )


def module_layout(module: nn.Module) -> Params:
    """Empty arrays shaped and typed like the module's federated state, to check ``Params``
    against."""
    return Params(
        {
            n: np.empty(tuple(t.shape), dtype=_numpy_dtype(t))
            for n, t in federated_tensors(module).items()
        }
    )


def load_params(module: nn.Module, params: Params) -> None:
    """Copy ``params`` into ``module``: exactly its federated state (an entry missing or
    extra, or a shape that differs, is a ``ParamsMismatchError`` naming it); the frozen
    parameters keep the values the module was built with."""
    check_layout(module_layout(module), params)
    tensors = federated_tensors(module)
    with torch.no_grad():
        for name, tensor in tensors.items():
            tensor.copy_(torch.from_numpy(np.array(params[name])))


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


def has_batch_norm(module: nn.Module) -> bool:
    """Whether ``module`` normalises by batch statistics in training (BatchNorm layers)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def batch_norm_entries(module: nn.Module) -> tuple[str, ...]:
    """The state entries of every BatchNorm layer (affine weights and running statistics):
    what FedBN (Li et al. 2021) keeps local to each client."""
    names: list[str] = []
    for prefix, layer in module.named_modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            names += [f"{prefix}.{n}" if prefix else n for n in layer.state_dict()]
    return tuple(names)


SINGLE_EXAMPLE_RULE = (
    "With batch norm, a batch of one example is skipped: PyTorch's BatchNorm cannot train "
    "on it (its variance is undefined), so a client's last batch of one is left out."
)


def batch_slices(num_examples: int, batch_size: int) -> list[slice]:
    """Consecutive batches over ``num_examples`` (batch_size 0 = one full batch)."""
    size = batch_size or num_examples
    return [slice(start, start + size) for start in range(0, num_examples, size)]


def check_metrics(value: object, what: str) -> dict[str, float]:
    """A user function's metrics: a mapping of names to finite numbers, or an error that
    says what came back instead."""
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, int | float | np.number | torch.Tensor)
        for k, v in value.items()
    ):
        raise ConfigError(what, _short(value), "a mapping of metric names to numbers")
    return {k: float(v) for k, v in value.items()}


def _short(value: object) -> object:
    """``value`` itself, or the start of its repr when that is long (for error messages)."""
    text = repr(value)
    return value if len(text) <= 80 else text[:77] + "..."


class TorchTrainer:
    """Trains a shared ``nn.Module`` skeleton on one client at a time (module docstring).

    Each epoch shuffles with ``np.random.default_rng(task.config.seed)``, so the batches
    depend only on the task, not on the process or the order clients run in. Without an
    ``optimizer`` the update is plain SGD on the mean batch loss (+ μ/2·‖w − w_global‖² when
    ``proximal_mu > 0``), or DP-SGD when the task asks for sample-level DP.
    """

    def __init__(
        self,
        module: nn.Module,
        task: str = "classification",
        *,
        loss: Loss | None = None,
        metrics: Metrics | None = None,
        optimizer: OptimizerFactory | None = None,
        train: TrainFunction | None = None,
        evaluate: EvaluateFunction | None = None,
        device: str | torch.device = "auto",
    ) -> None:
        self.task: Task = check_task(task)
        self.device = resolve_device(device)
        self.module = module.to(self.device)
        self.layout = module_layout(module)
        self.loss = loss
        self.metrics = metrics
        self.optimizer = optimizer
        self.train_function = train
        self.evaluate_function = evaluate
        # the parameters trained (a frozen base under adapters is not), in the module's order
        self._weights = {n: p for n, p in module.named_parameters() if p.requires_grad}
        self._names = list(self._weights)
        self.batch_norm = has_batch_norm(module)
        self._recurrence = UnrolledRecurrence(module)  # DP-SGD's vmap cannot take fused RNNs
        self._tensors = federated_tensors(module)
        # on the CPU, numpy views of the module's own storage: a load is one copy per tensor
        self._storage = (
            {n: t.detach().numpy() for n, t in self._tensors.items()}
            if self.device.type == "cpu"
            else {}
        )

    @property
    def custom(self) -> bool:
        """Whether the user replaced part of the training (so only this trainer, not the
        vectorised one, can run it)."""
        return (
            any(
                part is not None
                for part in (self.loss, self.optimizer, self.train_function, self.evaluate_function)
            )
            or self.device.type != "cpu"
        )

    # -- state in and out --------------------------------------------------------------
    def _load(self, params: Params) -> None:
        check_layout(self.layout, params)
        if self._storage:
            for name, view in self._storage.items():
                view[...] = params[name]
            return
        with torch.no_grad():
            for name, tensor in self._tensors.items():
                tensor.copy_(torch.from_numpy(np.array(params[name])))

    def _state(self) -> dict[str, np.ndarray]:
        if self._storage:
            return self._storage
        return {n: t.detach().cpu().numpy() for n, t in self._tensors.items()}

    def _delta(self, params: Params) -> Params:
        state = self._state()
        return Params({n: state[n] - params[n] for n in params})

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def _loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss is not None:
            return self.loss(outputs, targets)
        return mean_loss(self.task, outputs, targets)

    # -- training ----------------------------------------------------------------------
    def fit(self, params: Params, task: FitTask, data: ClientData) -> ClientUpdate:
        config = task.config
        if data.num_train == 0:
            raise ValueError(f"client {task.client_id!r} has no training examples")
        self._load(params)
        if not self.module.training:
            self.module.train()
        with seeded_torch(config.seed, self.device):
            if config.payload == "gradient":
                return self._gradient(params, task, data)
            if self.train_function is not None:
                self._refuse_algorithm(task, "its own train function")
                metrics = self._user_train(task, data)
            elif config.sample_dp is not None:
                self._refuse_algorithm(task, "DP-SGD")
                metrics = self._fit_dp_sgd(params, task, data)
            else:
                metrics = self._fit_sgd(params, task, data)
        return ClientUpdate(
            task.client_id, task.round, self._delta(params), float(data.num_train), metrics
        )

    def _refuse_algorithm(self, task: FitTask, what: str) -> None:
        """A client algorithm (SCAFFOLD's correction, FedNova's step count) assumes plain
        SGD steps the trainer takes itself."""
        if task.config.algorithm != "sgd":
            raise ConfigError(
                "algorithm", task.config.algorithm, f"'sgd' for a client trained by {what}"
            )

    def _gradient(self, params: Params, task: FitTask, data: ClientData) -> ClientUpdate:
        """FedSGD's payload: one full-batch gradient of the loss at the global params."""
        weights = list(self._weights.values())
        loss = self._loss(self.module(self._tensor(data.x_train)), self._tensor(data.y_train))
        grads = torch.autograd.grad(loss, weights)
        payload = Params(
            {n: g.detach().cpu().numpy() for n, g in zip(self._names, grads, strict=True)}
        )
        return ClientUpdate(
            task.client_id, task.round, payload, float(data.num_train), {"loss": loss.item()}
        )

    def _user_train(self, task: FitTask, data: ClientData) -> dict[str, float]:
        assert self.train_function is not None
        rng = np.random.default_rng(task.config.seed)
        returned = self.train_function(self.module, data, task.config, rng)
        return check_metrics(returned, f"train function's result for client {task.client_id!r}")

    def _fit_sgd(self, params: Params, task: FitTask, data: ClientData) -> dict[str, float]:
        config = task.config
        x, y = self._tensor(data.x_train), self._tensor(data.y_train)
        weights = list(self._weights.values())
        anchors = [w.detach().clone() for w in weights] if config.proximal_mu > 0 else []
        masks = (
            {n: m.to(self.device) for n, m in pruning_masks(params).items()}
            if config.masked
            else {}
        )
        optimizer = self.optimizer(weights, config.lr) if self.optimizer is not None else None
        if optimizer is not None:
            self._refuse_algorithm(task, "its own optimiser")
        corrections = self._corrections(task)
        frozen = [name in task.frozen for name in self._names]
        rng = np.random.default_rng(config.seed)
        losses: list[torch.Tensor] = []
        for _ in range(config.local_epochs):
            order = torch.from_numpy(rng.permutation(data.num_train)).to(self.device)
            for batch in batch_slices(data.num_train, config.batch_size):
                index = order[batch]
                if self.batch_norm and len(index) == 1:
                    continue  # batch norm cannot train on one example (SINGLE_EXAMPLE_RULE)
                loss = self._loss(self.module(x[index]), y[index])
                losses.append(loss.detach())
                grads = torch.autograd.grad(loss, weights)
                with torch.no_grad():
                    if anchors:  # ∇ μ/2·‖w − w_global‖² = μ·(w − w_global)
                        grads = tuple(
                            g + config.proximal_mu * (w - a)
                            for g, w, a in zip(grads, weights, anchors, strict=True)
                        )
                    if corrections:  # SCAFFOLD: + (c − c_i)
                        grads = tuple(g + c for g, c in zip(grads, corrections, strict=True))
                    if optimizer is None:
                        for w, g, still in zip(weights, grads, frozen, strict=True):
                            if not still:
                                w.add_(g, alpha=-config.lr)
                    else:
                        for w, g in zip(weights, grads, strict=True):
                            w.grad = g
                        optimizer.step()
                    for k, w in enumerate(weights):
                        if self._names[k] in masks:
                            w.mul_(masks[self._names[k]])
        metrics = {"loss": torch.stack(losses).mean().item()} if losses else {}
        counted = config.algorithm != "sgd"  # SCAFFOLD and FedNova need the step count
        return metrics | ({STEPS: float(len(losses))} if counted else {})

    def _corrections(self, task: FitTask) -> list[torch.Tensor]:
        """The task's gradient correction per parameter, in parameter order (empty when it
        has none); an entry it does not name (a local layer) gets none."""
        if task.correction is None:
            return []
        zeros = {n: np.zeros(self._tensors[n].shape, self.layout[n].dtype) for n in self._names}
        return [self._tensor(np.array(task.correction.get(n, zeros[n]))) for n in self._names]

    def _fit_dp_sgd(self, params: Params, task: FitTask, data: ClientData) -> dict[str, float]:
        """DP-SGD (``FitConfig.sample_dp``): Poisson-sampled steps, each example's gradient
        clipped to L2 norm C over all parameters, N(0, (z·C)²) added to their sum, divided
        by the expected batch size q·n. The sampling and the noise come from the client's
        own randomness (``FitTask.noise_seed``, else the OS CSPRNG), never from the server's
        task seed. Per-example gradients come from ``torch.func`` (vmap over ``grad``);
        recurrent layers run unrolled for it (``client.recurrent``)."""
        config = task.config
        dp = config.sample_dp
        assert dp is not None
        x, y = self._tensor(data.x_train), self._tensor(data.y_train)
        count = x.shape[0]
        rng = client_noise(None if dp.secure_noise else task.noise_seed, DP_SGD_STREAM)
        # plain tensors sharing the module's storage: updating them updates the module
        weights = {n: self._tensors[n].detach() for n in self._names}
        anchors = {n: w.clone() for n, w in weights.items()} if config.proximal_mu > 0 else {}
        masks = pruning_masks(params) if config.masked else {}

        def example_loss(
            w: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor
        ) -> torch.Tensor:
            out = functional_call(self.module, w, (xi.unsqueeze(0),))
            if self.loss is not None:
                return self.loss(out, yi.unsqueeze(0))
            return per_sample_loss(self.task, out, yi.unsqueeze(0)).sum()

        per_example = vmap(grad_and_value(example_loss), in_dims=(None, 0, 0))
        losses: list[float] = []
        for _ in range(dp.steps):
            chosen = torch.from_numpy(np.flatnonzero(rng.random(count) < dp.sampling_rate))
            summed = {n: torch.zeros_like(w) for n, w in weights.items()}
            if len(chosen) > 0:
                with self._recurrence.unrolled():
                    grads, loss = per_example(weights, x[chosen], y[chosen])
                norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
                factor = dp.clip / torch.clamp(norms, min=dp.clip)  # min(1, C/‖g‖), 0-safe
                summed = {n: torch.tensordot(factor, g, dims=1) for n, g in grads.items()}
                losses.append(float(loss.mean()))
            with torch.no_grad():
                noisy = self._noisy_sum(summed, dp.noise_multiplier, dp.clip, rng)
                for name, w in weights.items():
                    g = noisy[name].to(w.dtype) / (dp.sampling_rate * count)
                    if anchors:
                        g = g + config.proximal_mu * (w - anchors[name])
                    w.sub_(g, alpha=config.lr)
                    if name in masks:
                        w.mul_(masks[name].to(self.device))
        return {"loss": float(np.mean(losses))} if losses else {}

    def _noisy_sum(
        self,
        summed: dict[str, torch.Tensor],
        noise_multiplier: float,
        clip: float,
        rng: NoiseSource,
    ) -> dict[str, torch.Tensor]:
        """DP-SGD's noisy sum of clipped per-example gradients: all parameters as one
        vector through the discrete Gaussian mechanism (``privacy.mechanisms``)."""
        if noise_multiplier == 0:
            return summed
        vector = Params({n: g.detach().cpu().double().numpy() for n, g in summed.items()})
        noisy = discrete_gaussian_release(vector, noise_multiplier, clip, rng)
        return {n: self._tensor(noisy[n]) for n in summed}

    # -- evaluation --------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> torch.Tensor:
        """The module's outputs on ``x`` in evaluation mode, in chunks of ``EVAL_CHUNK``
        rows, so a large test split through a transformer stays within memory."""
        with torch.inference_mode():
            chunks = [
                self.module(self._tensor(x[part]))
                for part in batch_slices(len(x), EVAL_CHUNK) or [slice(0, 0)]
            ]
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks)

    def evaluate(
        self, params: Params, client_id: str, round_number: int, data: ClientData
    ) -> EvaluateResult:
        self._load(params)
        if data.num_test == 0:
            return EvaluateResult(client_id, round_number, 0, {})
        self.module.eval()
        if self.evaluate_function is not None:
            answer = self.evaluate_function(self.module, data)
            what = f"evaluate function's result for client {client_id!r}"
            if not (isinstance(answer, tuple) and len(answer) == 2):
                raise ConfigError(what, _short(answer), "a tuple (num_examples, metrics)")
            count, metrics = answer
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigError(f"{what}[0]", count, "an integer number of examples >= 0")
            return EvaluateResult(client_id, round_number, count, check_metrics(metrics, what))
        outputs = self.predict(data.x_test)
        targets = self._tensor(data.y_test)
        if self.loss is None and self.metrics is None:
            return EvaluateResult(
                client_id,
                round_number,
                data.num_test,
                evaluation_metrics(self.task, outputs, targets),
            )
        measured = {"loss": float(self._loss(outputs, targets))}
        if self.metrics is not None:
            measured |= check_metrics(self.metrics(outputs, targets), "metrics function's result")
        elif self.task == "classification":
            measured["accuracy"] = float((outputs.argmax(-1) == targets).double().mean())
        return EvaluateResult(client_id, round_number, data.num_test, measured)
