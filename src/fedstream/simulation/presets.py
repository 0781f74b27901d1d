"""Named settings of published experiments, shared by ``fedstream run --preset``, the
reproductions in ``benchmarks/quality/`` and their fast test versions."""

from __future__ import annotations

from typing import Any

from fedstream import checks
from fedstream.simulation.config import SimulationConfig, from_mapping, merge

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # the default job
    "digits": {},
    # five hospitals with different case mixes; federated logistic regression
    "breast_cancer_hospitals": {
        "data": {"dataset": "breast_cancer", "num_clients": 5, "partition": "dirichlet",
                 "alpha": 1.0},
        "model": {"name": "linear"},
        "client": {"local_epochs": 1, "batch_size": 10, "lr": 0.05},
        "run": {"clients_per_round": 5, "rounds": 50},
    },
    # FedProx paper (Li et al. 2020), Synthetic(1, 1), softmax regression
    "fedprox_synthetic": {
        "data": {"dataset": "synthetic", "num_clients": 30, "synthetic_alpha": 1.0,
                 "synthetic_beta": 1.0, "heldout_fraction": 0.0, "client_test_fraction": 0.1},
        "model": {"name": "linear"},
        "client": {"local_epochs": 20, "batch_size": 10, "lr": 0.01},
        "run": {"clients_per_round": 10, "rounds": 200},
        "execution": {"trainer": "sequential"},
    },
    # LEAF's Shakespeare paper experiment (paper_experiments/shakespeare.sh): its data
    # (preprocess.sh -s niid --sf 0.05 -k 64 -tf 0.9 -t sample), its char-LSTM, FedAvg with
    # 10 clients per round, 1 epoch, batch 10, lr 0.8, 80 rounds
    "shakespeare_leaf": {
        "data": {"dataset": "shakespeare", "shakespeare_fraction": 0.05,
                 "client_test_fraction": 0.1, "heldout_fraction": 0.0},
        "model": {"name": "char_lstm"},
        "client": {"local_epochs": 1, "batch_size": 10, "lr": 0.8},
        "run": {"clients_per_round": 10, "rounds": 80, "evaluate_every": 5},
    },
}  # fmt: skip


def preset(name: str, **changes: Any) -> SimulationConfig:
    """The config of preset ``name`` with ``changes`` (settings by section) applied and
    validated."""
    checks.one_of("preset", name, list(PRESETS))
    return from_mapping(merge(PRESETS[name], changes), source="preset")
