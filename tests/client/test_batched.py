"""The written-out cohort forward pass gives the bits ``vmap`` gives, forward and backward,
and is used only for the models it covers."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from fedstream.client.base import FitTask
from fedstream.client.batched import batched_forward
from fedstream.client.torch_trainer import params_from_module
from fedstream.client.vectorized import VectorizedTrainer
from fedstream.data.base import ClientData
from fedstream.models import build_model
from fedstream.types import FitConfig


def seeded(make):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return make()


MODELS = {
    "softmax regression": lambda: build_model("linear", 60, 10, seed=1),
    "mlp": lambda: build_model("mlp", 64, 10, seed=1),
    "other activations, no bias": lambda: seeded(
        lambda: nn.Sequential(
            nn.Linear(7, 9, bias=False),
            nn.Tanh(),
            nn.Linear(9, 5),
            nn.GELU(),
            nn.Linear(5, 5),
            nn.LeakyReLU(0.1),
            nn.Linear(5, 5),
            nn.Sigmoid(),
            nn.Linear(5, 5),
            nn.SiLU(),
            nn.Linear(5, 5),
            nn.ELU(),
            nn.Linear(5, 5),
            nn.Softplus(),
            nn.Linear(5, 3),
            nn.Identity(),
        )
    ),
    "float64": lambda: build_model("mlp", 64, 10, seed=1, dtype=torch.float64),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("cohort", [1, 3, 20])
def test_the_written_out_forward_and_its_gradients_are_vmaps_bits(name, cohort):
    module = MODELS[name]()
    forward = batched_forward(module)
    assert forward is not None
    dtype = next(module.parameters()).dtype
    features = next(module.parameters()).shape[-1]
    generator = torch.Generator().manual_seed(cohort)
    x = torch.randn(cohort, 10, features, generator=generator, dtype=dtype)
    wide = {  # each client's own weights, as a prefix view of a larger cohort's
        n: (p.detach() + 0.01 * torch.randn(cohort + 2, *p.shape, generator=generator, dtype=dtype))
        for n, p in module.named_parameters()
    }
    results = []
    for run in (vmap(lambda s, xx: functional_call(module, s, (xx,))), forward):
        leaves = {n: w[:cohort].detach().requires_grad_(True) for n, w in wide.items()}
        out = run(leaves, x)
        grads = torch.autograd.grad(out.square().sum(), list(leaves.values()))
        results.append((out, grads))
    (out_vmap, grads_vmap), (out_direct, grads_direct) = results
    assert torch.equal(out_vmap, out_direct)
    assert all(torch.equal(a, b) for a, b in zip(grads_vmap, grads_direct, strict=True))


@pytest.mark.parametrize(
    "module",
    [
        build_model("mlp_bn", 8, 3, seed=0),
        nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)),
        nn.Sequential(nn.Sequential(nn.Linear(4, 2))),
        nn.Sequential(nn.Flatten(), nn.Linear(4, 2)),
        nn.Sequential(),
        nn.Linear(4, 2),
    ],
    ids=["batch norm", "dropout", "nested", "flatten", "empty", "bare linear"],
)
def test_any_other_model_is_left_to_vmap(module):
    assert batched_forward(module) is None


def test_a_cohort_trains_to_the_same_bits_with_or_without_the_written_out_forward():
    module = build_model("mlp", 6, 4, seed=3)
    rng = np.random.default_rng(0)
    clients = [
        ClientData(
            rng.normal(size=(n, 6)).astype(np.float32), rng.integers(0, 4, n),
            np.zeros((0, 6), np.float32), np.zeros(0, np.int64),
        )
        for n in (3, 17, 10, 25)
    ]  # fmt: skip
    tasks = [
        FitTask(
            f"c{k}", 1, FitConfig(local_epochs=2, batch_size=4, lr=0.1, proximal_mu=0.01, seed=k)
        )
        for k in range(len(clients))
    ]
    start = params_from_module(module)
    direct = VectorizedTrainer(module, "classification")
    assert direct._forward_direct is not None
    through_vmap = VectorizedTrainer(module, "classification")
    through_vmap._forward_direct = None
    a = direct.fit_cohort(start, tasks, clients)
    b = through_vmap.fit_cohort(start, tasks, clients)
    assert a.payload.bit_equal(b.payload) and a.metrics == b.metrics
