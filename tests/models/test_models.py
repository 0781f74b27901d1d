"""The built-in models: the MLP with batch normalisation that FedBN runs on."""

import numpy as np
import pytest
import torch

import fedstream
from fedstream import FitConfig, FitTask, TorchTrainer
from fedstream.client import params_from_module
from fedstream.client.vectorized import VectorizedTrainer
from fedstream.data.base import ClientData
from fedstream.models import build_model
from fedstream.simulation import build
from fedstream.types import ClientUpdate
from tests.settings import make_config, nested


def test_mlp_bn_normalises_each_hidden_layer_and_keeps_the_mlps_output_layer():
    model = build_model("mlp_bn", 64, 10, seed=0)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear"]
    names = list(params_from_module(model))
    assert "1.running_mean" in names and "6.weight" in names
    again = build_model("mlp_bn", 64, 10, seed=0)
    assert params_from_module(again).bit_equal(params_from_module(model))
    with torch.no_grad():
        assert model.eval()(torch.zeros(4, 64)).shape == (4, 10)


def test_fedbn_on_mlp_bn_keeps_the_batch_norm_layers_on_the_clients():
    # batches of 32 (most clients train full-batch): with batches of 10, batch norm over a
    # few near-identical digits turns last-bit differences between CPUs and trainers into
    # different runs (0.320, 0.260 or 0.208 after 3 rounds); here both trainers agree
    run = {"model": "mlp_bn", "local_batchnorm": True, "rounds": 3, "alpha": 0.1, "batch_size": 32}
    fedbn = fedstream.simulate(**nested(**run))
    initial = params_from_module(build_model("mlp_bn", 64, 10, seed=0))
    first = fedstream.simulate(**nested(**run | {"rounds": 1, "evaluate_every": 0}))
    # the server never learns the BatchNorm layers: they stay as they were after round 1
    for name in ("1.weight", "1.running_mean", "4.running_var"):
        np.testing.assert_array_equal(fedbn.state.params[name], first.state.params[name])
    assert not np.array_equal(fedbn.state.params["0.weight"], initial["0.weight"])
    # label skew is not what FedBN is for: it trails FedAvg on the same model (0.320)
    assert fedbn.final_metrics["fed_personal_accuracy"] == pytest.approx(0.276, abs=1e-3)
    assert fedbn.final_metrics["fed_accuracy"] == pytest.approx(0.220, abs=1e-3)  # the server's
    sequential = fedstream.simulate(**nested(**run | {"trainer": "sequential"}))
    for name in ("fed_personal_accuracy", "fed_accuracy"):
        assert sequential.final_metrics[name] == fedbn.final_metrics[name]


def test_mlp_bn_trains_the_same_vectorised_on_real_skewed_clients_in_float64():
    # batch norm over a small batch of near-identical digits divides by a tiny standard
    # deviation: float32 rounding that differs between the two trainers grows up to 4.4 in
    # one of these clients' deltas, so the comparison is made in float64, where the
    # trainers agree to 1e-8 (the same client's difference still grows from 1e-16 to 8e-9)
    cohort_matches_one_at_a_time("mlp_bn", alpha=0.1, clients=20, batch_size=10, first_seed=0)


def cohort_matches_one_at_a_time(
    model_name: str, alpha: float, clients: int, batch_size: int, first_seed: int
) -> tuple[list[ClientData], list[ClientUpdate]]:
    """Train ``clients`` real skewed clients of ``model_name`` (in float64) as one
    vectorised cohort and each alone; check the updates agree; return data and cohort."""
    setup = build(make_config(model=model_name, alpha=alpha))
    ids = sorted(setup.dataset.clients)[:clients]
    data = [to_float64(setup.dataset.clients[c]) for c in ids]
    model = build_model(model_name, 64, 10, seed=0, dtype=torch.float64)
    start = params_from_module(model)
    tasks = [
        FitTask(
            c, 1, FitConfig(local_epochs=2, batch_size=batch_size, lr=0.05, seed=first_seed + k)
        )
        for k, c in enumerate(ids)
    ]
    cohort = VectorizedTrainer(model, "classification").fit_cohort(start, tasks, data).rows()
    for task, one, many in zip(tasks, data, cohort, strict=True):
        alone = TorchTrainer(model, "classification").fit(start, task, one)
        np.testing.assert_allclose(many.payload.flat(), alone.payload.flat(), atol=1e-7)
    return data, cohort


def to_float64(data: ClientData) -> ClientData:
    return ClientData(
        data.x_train.astype(np.float64), data.y_train, data.x_test.astype(np.float64), data.y_test
    )


def test_cnn_bn_normalises_each_conv_and_drops_before_the_classifier():
    model = build_model("cnn_bn", 64, 10, seed=0)
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 2
    assert isinstance(model.dropout, torch.nn.Dropout) and model.dropout.p == 0.25
    # the plain cnn keeps its entry names, and its initial weights are the cnn_bn's convs'
    plain = params_from_module(build_model("cnn", 64, 10, seed=0))
    normed = params_from_module(model)
    assert list(plain) == ["features.0.weight", "features.0.bias", "features.3.weight",
                           "features.3.bias", "classifier.weight", "classifier.bias"]  # fmt: skip
    np.testing.assert_array_equal(plain["features.0.weight"], normed["features.0.weight"])
    assert "features.1.running_var" in normed
    with pytest.raises(fedstream.ConfigError, match="8×8 images"):
        build_model("cnn_bn", 30, 10, seed=0)


def test_cnn_bn_trains_the_same_vectorised_with_batch_norm_and_replayed_dropout():
    data, cohort = cohort_matches_one_at_a_time(
        "cnn_bn", alpha=0.5, clients=12, batch_size=16, first_seed=100
    )
    # dropout is drawn: another seed trains the first client differently
    model = build_model("cnn_bn", 64, 10, seed=0, dtype=torch.float64)
    other = FitTask(cohort[0].client_id, 1, FitConfig(2, 16, 0.05, seed=7))
    moved = TorchTrainer(model, "classification").fit(params_from_module(model), other, data[0])
    assert not np.allclose(moved.payload.flat(), cohort[0].payload.flat(), atol=1e-4)
