"""Recurrent layers unrolled for vectorised cohorts, against torch's fused kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn.utils.rnn import pack_padded_sequence

from fedstream.client.base import FitTask
from fedstream.client.recurrent import UnrolledRecurrence, unbatchable
from fedstream.client.torch_trainer import TorchTrainer, params_from_module
from fedstream.client.vectorized import VectorizedTrainer
from fedstream.data.base import ClientData
from fedstream.errors import ConfigError
from fedstream.models import build_model
from fedstream.simulation.engine import choose_trainer
from fedstream.types import FitConfig, SampleDP

CLIENTS = 3
LAYERS = [
    pytest.param(lambda: nn.LSTM(4, 5, num_layers=2, batch_first=True), (6, 7, 4), id="lstm"),
    pytest.param(lambda: nn.LSTM(4, 5, bidirectional=True), (7, 6, 4), id="lstm-bidirectional"),
    pytest.param(lambda: nn.GRU(4, 5, num_layers=2, batch_first=True), (6, 7, 4), id="gru"),
    pytest.param(lambda: nn.GRU(4, 5, bias=False, bidirectional=True), (7, 6, 4), id="gru-nobias"),
    pytest.param(lambda: nn.RNN(4, 5, nonlinearity="relu", batch_first=True), (6, 7, 4), id="relu"),
    pytest.param(lambda: nn.RNN(4, 5, num_layers=2), (7, 6, 4), id="tanh"),
    pytest.param(lambda: nn.LSTM(4, 5, batch_first=True), (7, 4), id="lstm-unbatched"),
]


def summed(out: tuple[torch.Tensor, object]) -> torch.Tensor:
    """A loss that reaches every output: the sequence, h_n and (LSTM) c_n."""
    sequence, state = out
    if isinstance(state, tuple):
        return (sequence**2).sum() + (state[0] ** 3).sum() + (2 * state[1]).sum()
    assert isinstance(state, torch.Tensor)
    return (sequence**2).sum() + (state**3).sum()


def clients_of(layer: nn.Module, shape: tuple[int, ...], hx: object = None):
    """Each client's own weights and inputs (float64), its loss and gradients from
    torch's fused kernel, and the loss and gradients of the unrolled layer under vmap."""
    torch.manual_seed(0)
    layer = layer.double()
    weights = {
        n: p.detach() + 0.1 * torch.randn(CLIENTS, *p.shape, dtype=torch.float64)
        for n, p in layer.named_parameters()
    }
    x = torch.randn(CLIENTS, *shape, dtype=torch.float64)
    args = () if hx is None else (hx,)
    fused = []
    for k in range(CLIENTS):
        own = {n: w[k].clone().requires_grad_(True) for n, w in weights.items()}
        loss = summed(functional_call(layer, own, (x[k], *args)))
        fused.append((loss.detach(), torch.autograd.grad(loss, list(own.values()))))
    leaves = {n: w.clone().requires_grad_(True) for n, w in weights.items()}
    with UnrolledRecurrence(layer).unrolled():
        losses = vmap(lambda w, xk: summed(functional_call(layer, w, (xk, *args))))(leaves, x)
    grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
    return fused, losses, grads


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_unrolled_layers_give_the_fused_kernels_outputs_and_gradients(make, shape):
    fused, losses, grads = clients_of(make(), shape)
    for k, (loss, own_grads) in enumerate(fused):
        torch.testing.assert_close(losses[k], loss, rtol=1e-12, atol=1e-12)
        for ours, theirs in zip(grads, own_grads, strict=True):
            torch.testing.assert_close(ours[k], theirs, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_given_initial_state_is_used(kind):
    h0 = torch.randn(1, 6, 5, dtype=torch.float64)
    layer = nn.LSTM(4, 5, batch_first=True) if kind == "lstm" else nn.GRU(4, 5, batch_first=True)
    hx = (h0, torch.randn(1, 6, 5, dtype=torch.float64)) if kind == "lstm" else h0
    fused, losses, grads = clients_of(layer, (6, 7, 4), hx)
    zero_start, _, _ = clients_of(layer, (6, 7, 4))
    assert not torch.isclose(fused[0][0], zero_start[0][0])  # the state changes the loss
    for k, (loss, own_grads) in enumerate(fused):
        torch.testing.assert_close(losses[k], loss, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grads[0][k], own_grads[0], rtol=1e-11, atol=1e-11)


def test_layers_that_cannot_be_unrolled_are_named_with_the_reason():
    assert unbatchable(nn.Sequential(nn.Linear(2, 2))) is None
    assert unbatchable(nn.LSTM(2, 3, num_layers=2)) is None
    dropout = unbatchable(nn.Sequential(nn.GRU(2, 3, num_layers=2, dropout=0.2)))
    assert dropout is not None and "'0' has dropout 0.2" in dropout
    projected = unbatchable(nn.LSTM(2, 4, proj_size=2))
    assert projected is not None and "proj_size 2" in projected

    class OwnLSTM(nn.LSTM):
        pass

    own = unbatchable(OwnLSTM(2, 3))
    assert own is not None and "is OwnLSTM" in own
    with pytest.raises(ConfigError, match=r"trainer.*proj_size"):
        VectorizedTrainer(nn.Sequential(nn.LSTM(2, 4, proj_size=2)), "classification")


def test_packed_sequences_are_refused_inside_a_cohort():
    layer = nn.GRU(2, 3, batch_first=True)
    packed = pack_padded_sequence(torch.randn(2, 4, 2), [4, 2], batch_first=True)
    with UnrolledRecurrence(layer).unrolled(), pytest.raises(ConfigError, match="PackedSequence"):
        layer(packed)
    layer(packed)  # outside the cohort, torch's own forward is back


def text_clients(sizes: list[int], vocabulary: int, length: int) -> list[ClientData]:
    rng = np.random.default_rng(0)
    return [
        ClientData(
            rng.integers(0, vocabulary, (n, length)).astype(np.float64),
            rng.integers(0, vocabulary, n),
            rng.integers(0, vocabulary, (2, length)).astype(np.float64),
            rng.integers(0, vocabulary, 2),
        )
        for n in sizes
    ]


@pytest.mark.parametrize("algorithm", ["sgd", "fedprox", "scaffold"])
def test_a_char_lstm_cohort_trains_as_each_client_alone(algorithm):
    """LEAF's model (narrow) over uneven clients, two epochs, plain or with FedProx's
    proximal term or SCAFFOLD's corrections: the cohort's updates equal the one-at-a-time
    trainer's, which runs torch's fused LSTM (float64)."""
    model = build_model("char_lstm", 1, 12, seed=0, hidden=(8, 8), dtype=torch.float64)
    data = text_clients([23, 7, 41, 12], vocabulary=12, length=9)
    start = params_from_module(model)
    mu = 0.5 if algorithm == "fedprox" else 0.0
    rng = np.random.default_rng(1)
    tasks = [
        FitTask(
            f"c{k}",
            1,
            FitConfig(local_epochs=2, batch_size=5, lr=0.5, proximal_mu=mu, seed=10 + k),
            correction=start.map(lambda a: 0.01 * rng.standard_normal(a.shape))
            if algorithm == "scaffold"
            else None,
        )
        for k in range(len(data))
    ]
    cohort = VectorizedTrainer(model, "classification").fit_cohort(start, tasks, data).rows()
    for task, one, many in zip(tasks, data, cohort, strict=True):
        alone = TorchTrainer(model, "classification").fit(start, task, one)
        assert many.client_id == task.client_id and many.weight == one.num_train
        np.testing.assert_allclose(many.payload.flat(), alone.payload.flat(), atol=1e-10)
        assert many.metrics["loss"] == pytest.approx(alone.metrics["loss"], abs=1e-10)
        assert np.abs(many.payload.flat()).max() > 1e-3  # it trained


def test_auto_keeps_lstm_models_one_client_at_a_time_says_why_and_vectorises_grus():
    model = build_model("char_lstm", 1, 12, seed=0, hidden=(8, 8))
    name, why = choose_trainer("auto", model)
    assert name == "sequential" and "fused LSTM" in why
    assert choose_trainer("vectorized", model)[0] == "vectorized"
    gru = nn.Sequential(nn.Embedding(5, 3), nn.GRU(3, 4, batch_first=True))
    assert choose_trainer("auto", gru)[0] == "vectorized"


def test_dp_sgd_takes_per_example_gradients_through_an_lstm():
    """DP-SGD's per-example gradients (vmap of grad) run through the unrolled LSTM: with
    every example sampled, no noise and a clip no gradient reaches, one step is plain
    full-batch SGD; with a tiny clip, the step is at most lr·clip long."""
    model = build_model("char_lstm", 1, 12, seed=0, hidden=(8, 8), dtype=torch.float64)
    data = text_clients([13], vocabulary=12, length=9)[0]
    start = params_from_module(model)
    trainer = TorchTrainer(model, "classification")

    def step(clip: float) -> np.ndarray:
        dp = SampleDP(clip=clip, noise_multiplier=0.0, sampling_rate=1.0, steps=1)
        fit = FitConfig(local_epochs=1, batch_size=13, lr=0.5, seed=1, sample_dp=dp)
        return trainer.fit(start, FitTask("c", 1, fit, noise_seed=3), data).payload.flat()

    plain = trainer.fit(start, FitTask("c", 1, FitConfig(batch_size=13, lr=0.5, seed=1)), data)
    np.testing.assert_allclose(step(1e6), plain.payload.flat(), rtol=0, atol=1e-12)
    clipped = step(1e-3)
    assert 0 < np.linalg.norm(clipped) <= 0.5 * 1e-3 * (1 + 1e-9)


def test_dp_sgd_refuses_an_lstm_with_dropout_between_layers():
    model = nn.Sequential(nn.Embedding(5, 3), nn.GRU(3, 4, num_layers=2, dropout=0.5))
    with pytest.raises(ConfigError, match=r"dropout 0\.5"), UnrolledRecurrence(model).unrolled():
        pass
