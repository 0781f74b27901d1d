"""The correctness anchor: federated linear regression on sklearn's diabetes data.

FedSGD with full-batch gradients is gradient descent on the pooled mean squared error, so
it must reach the centralised least-squares solution; FedAvg with one local full-batch step
is the same arithmetic and must give the same parameters.
"""

import numpy as np
import pytest
import torch

from fedstream import (
    FedAvg,
    FedSGD,
    InProcessTransport,
    RoundConfig,
    ServerState,
    TorchTrainer,
    VectorizedTrainer,
)
from fedstream.client import params_from_module
from fedstream.data import federate
from fedstream.models import build_model
from fedstream.rounds import run_rounds

# 2/(λmin + λmax) of the Hessian 2·XᵀX/n of standardised diabetes with an intercept
# (λ ≈ 0.0171 and 8.05): the fastest stable step for plain gradient descent.
SERVER_LR = 0.24


def diabetes_setup(trainer_cls=TorchTrainer):
    data = federate(
        "diabetes",
        10,
        "iid",
        np.random.default_rng(0),
        heldout_fraction=0.0,
        client_test_fraction=0.0,
    )
    model = build_model("linear", data.num_features, 1, seed=0, dtype=torch.float64)
    transport = InProcessTransport(data.clients, trainer_cls(model, "regression"))
    return data, params_from_module(model), transport


def least_squares(data) -> np.ndarray:
    x = np.concatenate([c.x_train for c in data.clients.values()])
    y = np.concatenate([c.y_train for c in data.clients.values()])
    design = np.hstack([x, np.ones((len(x), 1))])
    return np.linalg.lstsq(design, y, rcond=None)[0]


def as_vector(params) -> np.ndarray:
    return np.concatenate([params["0.weight"].ravel(), params["0.bias"].ravel()])


def full_participation(**overrides) -> RoundConfig:
    return RoundConfig(
        clients_per_round=10, min_clients=10, batch_size=0, evaluate_fraction=0.0, **overrides
    )


@pytest.mark.slow
def test_fedsgd_reaches_the_least_squares_solution():
    # Gradient descent needs about 3,070 steps here to get within 1e-6 (the Hessian's
    # condition number is 470), so the vectorised trainer keeps this test to seconds;
    # test_trainers shows it computes the same gradients as the sequential one.
    data, start, transport = diabetes_setup(VectorizedTrainer)
    state = ServerState.initial(start, seed=0)
    ids = sorted(data.clients)
    for state, _ in run_rounds(  # noqa: B007, B020 (the last state is the result)
        state, FedSGD(server_lr=SERVER_LR), transport, ids, full_participation(), until_round=3300
    ):
        pass
    exact = least_squares(data)
    relative = np.linalg.norm(as_vector(state.params) - exact) / np.linalg.norm(exact)
    assert relative < 1e-6
    assert state.params["0.weight"].dtype == np.float64


def test_fedavg_with_one_full_batch_step_equals_fedsgd():
    data, start, transport = diabetes_setup()
    ids = sorted(data.clients)
    initial = ServerState.initial(start, seed=0)
    config = full_participation(lr=SERVER_LR, local_epochs=1)
    for (sgd, _), (avg, _) in zip(
        run_rounds(initial, FedSGD(server_lr=SERVER_LR), transport, ids, config, until_round=50),
        run_rounds(initial, FedAvg(), transport, ids, config, until_round=50),
        strict=True,
    ):
        np.testing.assert_allclose(
            as_vector(avg.params), as_vector(sgd.params), rtol=1e-12, atol=1e-12
        )
    assert np.linalg.norm(as_vector(avg.params) - as_vector(start)) > 1.0  # they did move
