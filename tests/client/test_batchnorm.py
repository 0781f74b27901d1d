"""Batch norm over each client's real rows, against nn.BatchNorm on those rows alone."""

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from fedstream.client.batchnorm import MaskedBatchNorm


def cohort_of(layer: nn.Module, clients: int) -> dict[str, torch.Tensor]:
    state = {n: t.detach() for n, t in layer.state_dict().items()}
    return {n: t.unsqueeze(0).repeat(clients, *[1] * t.dim()).clone() for n, t in state.items()}


@pytest.mark.parametrize("momentum", [0.1, None])
def test_each_client_normalises_over_its_real_rows_as_the_layer_does_alone(momentum):
    torch.manual_seed(0)
    layer = nn.BatchNorm2d(3, momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    lengths = [5, 2, 0, 4]  # a client with no batch this step
    x = torch.randn(len(lengths), 5, 3, 4, 4, dtype=torch.float64) * 3 + 1
    rows = (torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]).to(torch.float64)
    state = cohort_of(layer, len(lengths))
    norms = MaskedBatchNorm(layer)

    def forward(state, rows, x):
        with norms.over(rows):
            return functional_call(layer, state, (x,))

    layer.train()
    out = vmap(forward)(state, rows, x)
    for k, n in enumerate(lengths):
        alone = nn.BatchNorm2d(3, momentum=momentum, dtype=torch.float64)
        alone.load_state_dict(layer.state_dict())
        alone.train()
        if n == 0:  # no batch: the running statistics and the count stay
            for name, value in alone.state_dict().items():
                torch.testing.assert_close(state[name][k], value, rtol=0, atol=0)
            continue
        expected = alone(x[k, :n])
        torch.testing.assert_close(out[k, :n], expected, rtol=1e-12, atol=1e-12)
        for name, value in alone.state_dict().items():
            torch.testing.assert_close(state[name][k], value, rtol=1e-12, atol=1e-12)
    assert "forward" not in vars(layer)  # the layer is itself again outside the context


def test_gradients_through_the_masked_statistics_match_the_layers():
    torch.manual_seed(1)
    layer = nn.BatchNorm1d(4, dtype=torch.float64)
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    rows = torch.tensor([[1.0] * 6, [1.0] * 3 + [0.0] * 3], dtype=torch.float64)
    state = cohort_of(layer, 2)
    weights = {n: state[n].requires_grad_(True) for n in ("weight", "bias")}
    norms = MaskedBatchNorm(layer)

    def forward(state, rows, x):
        with norms.over(rows):
            return functional_call(layer, state, (x,))

    out = vmap(forward)({**state, **weights}, rows, x)
    loss = (out.square() * rows[..., None]).sum()  # padded rows do not count
    grads = torch.autograd.grad(loss, [weights["weight"], weights["bias"]])
    for k, n in enumerate([6, 3]):
        alone = nn.BatchNorm1d(4, dtype=torch.float64)
        own = alone(x[k, :n]).square().sum()
        mine = torch.autograd.grad(own, [alone.weight, alone.bias])
        torch.testing.assert_close(grads[0][k], mine[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grads[1][k], mine[1], rtol=1e-10, atol=1e-12)


def test_in_eval_mode_the_running_statistics_normalise():
    layer = nn.BatchNorm1d(2, dtype=torch.float64)
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([1.0, -1.0]))
        layer.running_var.copy_(torch.tensor([4.0, 0.25]))
    layer.eval()
    x = torch.tensor([[3.0, 0.0]], dtype=torch.float64)
    with MaskedBatchNorm(layer).over(torch.ones(1, dtype=torch.float64)):
        out = layer(x)
    expected = [[2.0 / (4 + 1e-5) ** 0.5, 1.0 / (0.25 + 1e-5) ** 0.5]]
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64))
