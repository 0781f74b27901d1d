"""The same FedAvg on Apple's pfl-research simulator (``pfl`` 0.6.0, PyTorch backend).

Runs in pfl's own venv (``benchmarks/perf/setup_venv.sh pfl``):

    benchmarks/perf/.pfl-venv/bin/python benchmarks/perf/pfl_sim.py WORKLOAD.npz

pfl's ``FederatedAveraging`` on its ``SimulatedBackend``, weighted by data points, with a
central SGD of learning rate 1 (pfl's FedAvg). Its user sampler follows the exported
schedule: each round's user is "round:client", whose dataset holds the client's rows in
the order its shuffle seed gives (``default_rng(seed).permutation``), so pfl's own batching
(consecutive slices) gives every contender's batches. For more than one local epoch
(W4), a user's dataset gives each epoch the next permutation of that generator
(``Reshuffled``), as fedstream's trainers draw them. For W4's batch norm and dropout, pfl
is made to do what every other contender does: batch norm's running statistics are
federated beside the weights (pfl federates only trainable parameters, so they are added
to its variable map and its central optimiser), a batch of one example is skipped, and
torch's generator is seeded from the task seed before a user trains (``torch_seed``), so
the dropout masks are the same. One round runs before the clock, since pfl imports much
of itself (its privacy mechanisms, scipy, torch's compiler) on first use. Prints one JSON
line: the wall time of ``algorithm.run`` over all rounds and the final evaluation, client
updates, final accuracy.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pfl.aggregate.simulate import SimulatedBackend
from pfl.aggregate.weighting import WeightByDatapoints
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
from pfl.data.dataset import Dataset
from pfl.data.federated_dataset import FederatedDataset
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
from pfl.metrics import Weighted
from pfl.model.pytorch import PyTorchModel

sys.path.insert(0, str(Path(__file__).parent))
from workloads import accuracy, build_module, hyperparameters, load, torch_seed


class WithLoss(torch.nn.Module):
    """The workload's module with the ``loss`` and ``metrics`` pfl's model asks for."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x)
        return out

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.train()  # pfl sets no mode; batch norm and dropout need it
        return F.cross_entropy(self.inner(x), y)

    @torch.no_grad()
    def metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        self.eval()
        summed = F.cross_entropy(self.inner(x), y, reduction="sum")
        return {"loss": Weighted(float(summed), len(y))}


# the batch size pfl's evaluation asks for: pfl evaluates each user before and after its
# training in round 0, and those passes must not take a training epoch's permutation
EVALUATION_BATCH = 1 << 40


class Reshuffled(Dataset):
    """A user's rows, each training epoch (each ``iter`` call) in the next permutation of
    the generator its task seed gives, as fedstream's trainers draw them; with batch norm a
    batch of one example is skipped, as they skip it. The first epoch seeds torch's
    generator from the task seed, as fedstream does before a task (dropout masks). An
    evaluation pass (``EVALUATION_BATCH``) reads the rows as they are and draws nothing."""

    def __init__(self, x: np.ndarray, y: np.ndarray, seed: int, batch_norm: bool, user: str):
        super().__init__(raw_data=(torch.from_numpy(x), torch.from_numpy(y)), user_id=user)
        self.seed, self.batch_norm = seed, batch_norm
        self.shuffle = np.random.default_rng(seed)
        self.epochs = 0

    def iter(self, batch_size: int | None) -> Any:
        if batch_size == EVALUATION_BATCH:
            yield self.raw_data
            return
        if self.epochs == 0:
            torch.default_generator.manual_seed(torch_seed(self.seed))
        self.epochs += 1
        x, y = self.raw_data
        order = torch.from_numpy(self.shuffle.permutation(len(y)))
        size = batch_size or len(y)
        for start in range(0, len(y), size):
            rows = order[start : start + size]
            if self.batch_norm and len(rows) == 1:
                continue
            yield x[rows], y[rows]


def scheduled(spec: dict[str, Any]) -> FederatedDataset:
    """The exported rounds as pfl users: "round:client", sampled in the exported order."""
    x, y, offsets = spec["x"], spec["y"], spec["offsets"]
    seeds = {
        f"{r}:{c}": int(s)
        for r, (chosen, drawn) in enumerate(zip(spec["chosen"], spec["seeds"], strict=True))
        for c, s in zip(chosen, drawn, strict=True)
    }
    order = iter(list(seeds))
    epochs, _, _ = hyperparameters(spec)
    batch_norm = str(spec["model"]) == "cnn_bn"

    def make_dataset(user: str) -> Dataset:
        client = int(user.split(":")[1])
        rows = slice(int(offsets[client]), int(offsets[client + 1]))
        if epochs > 1 or batch_norm:
            return Reshuffled(x[rows], y[rows], seeds[user], batch_norm, user)
        shuffle = np.random.default_rng(seeds[user]).permutation(rows.stop - rows.start)
        features = torch.from_numpy(x[rows][shuffle])
        labels = torch.from_numpy(y[rows][shuffle])
        return Dataset(raw_data=(features, labels), user_id=user)

    return FederatedDataset(make_dataset, lambda: next(order))


def train(spec: dict[str, Any], rounds: int) -> torch.nn.Module:
    """pfl's FedAvg over the first ``rounds`` exported rounds; the trained module."""
    epochs, batch, lr = hyperparameters(spec)
    cohort = spec["chosen"].shape[1]
    module = WithLoss(build_module(spec))
    # batch norm's running statistics, federated as every other contender federates them
    statistics = {n: b for n, b in module.named_buffers() if b.is_floating_point()}
    model = PyTorchModel(
        module,
        local_optimizer_create=torch.optim.SGD,
        central_optimizer=torch.optim.SGD([*module.parameters(), *statistics.values()], lr=1.0),
    )
    model._variable_map.update(statistics)
    backend = SimulatedBackend(
        training_data=scheduled(spec),
        val_data=scheduled(spec),  # never sampled: val_cohort_size 0
        postprocessors=[WeightByDatapoints()],
    )
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=rounds,
            evaluation_frequency=rounds + 1,
            train_cohort_size=int(cohort),
            val_cohort_size=0,
        ),
        backend=backend,
        model=model,
        model_train_params=NNTrainHyperParams(
            local_learning_rate=lr, local_num_epochs=epochs, local_batch_size=batch
        ),
        model_eval_params=NNEvalHyperParams(local_batch_size=EVALUATION_BATCH),
        callbacks=[],
        send_metrics_to_platform=False,
    )
    return module.inner


def main() -> None:
    torch.set_num_threads(1)
    spec = load(Path(sys.argv[1]))
    rounds, cohort = spec["chosen"].shape
    train(spec, 1)  # a round before the clock: pfl imports much of itself on first use
    started = time.perf_counter()
    trained = train(spec, int(rounds))
    final = accuracy(trained, spec)
    wall = time.perf_counter() - started
    figures = {"wall_s": wall, "client_updates": int(rounds * cohort), "final_accuracy": final}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
