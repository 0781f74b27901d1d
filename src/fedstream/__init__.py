"""fedstream: federated learning that trains one model across many data holders without
moving their data, keeps what they send private and small, and serves the freshest model.

The public names below are imported when first used (PEP 562), so ``import fedstream``
and ``fedstream --help`` do not pay for torch, scikit-learn and the rest until a name that
needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from fedstream.app import App, load_app
    from fedstream.client import FitTask, TorchTrainer, Trainer, VectorizedTrainer
    from fedstream.compression import Compression
    from fedstream.errors import (
        ClientFailure,
        ConfigError,
        FedstreamError,
        ParamsMismatchError,
        PrivacyBudgetExceeded,
        RoundFailedError,
        WireFormatError,
    )
    from fedstream.params import Params
    from fedstream.privacy.dp import DifferentialPrivacy
    from fedstream.rounds import RoundConfig, run_round, run_rounds
    from fedstream.secure import CKKSConfig, PaillierConfig, SecAggConfig
    from fedstream.simulation import SimulationConfig, SimulationResult, simulate
    from fedstream.strategies import (
        FedAdagrad,
        FedAdam,
        FedAvg,
        FedAvgM,
        FedProx,
        FedSGD,
        FedYogi,
        make_strategy,
    )
    from fedstream.transport import InProcessTransport
    from fedstream.types import (
        ClientUpdate,
        EvaluateResult,
        FitConfig,
        RoundReport,
        ServerState,
        WeightedSum,
    )

_PUBLIC: dict[str, str] = {
    "App": "fedstream.app",
    "CKKSConfig": "fedstream.secure",
    "ClientFailure": "fedstream.errors",
    "ClientUpdate": "fedstream.types",
    "Compression": "fedstream.compression",
    "ConfigError": "fedstream.errors",
    "DifferentialPrivacy": "fedstream.privacy.dp",
    "EvaluateResult": "fedstream.types",
    "FedAdagrad": "fedstream.strategies",
    "FedAdam": "fedstream.strategies",
    "FedAvg": "fedstream.strategies",
    "FedAvgM": "fedstream.strategies",
    "FedProx": "fedstream.strategies",
    "FedSGD": "fedstream.strategies",
    "FedYogi": "fedstream.strategies",
    "FedstreamError": "fedstream.errors",
    "FitConfig": "fedstream.types",
    "FitTask": "fedstream.client",
    "InProcessTransport": "fedstream.transport",
    "PaillierConfig": "fedstream.secure",
    "Params": "fedstream.params",
    "ParamsMismatchError": "fedstream.errors",
    "PrivacyBudgetExceeded": "fedstream.errors",
    "RoundConfig": "fedstream.rounds",
    "RoundFailedError": "fedstream.errors",
    "RoundReport": "fedstream.types",
    "SecAggConfig": "fedstream.secure",
    "ServerState": "fedstream.types",
    "SimulationConfig": "fedstream.simulation",
    "SimulationResult": "fedstream.simulation",
    "TorchTrainer": "fedstream.client",
    "Trainer": "fedstream.client",
    "VectorizedTrainer": "fedstream.client",
    "WeightedSum": "fedstream.types",
    "WireFormatError": "fedstream.errors",
    "load_app": "fedstream.app",
    "make_strategy": "fedstream.strategies",
    "run_round": "fedstream.rounds",
    "run_rounds": "fedstream.rounds",
    "simulate": "fedstream.simulation",
}
"""Each public name and the module that defines it."""


def __getattr__(name: str) -> Any:
    """A public name from its module, or a subpackage (``fedstream.simulation``), on first
    use; it is then cached in this module's namespace."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = [
    "App",
    "CKKSConfig",
    "ClientFailure",
    "ClientUpdate",
    "Compression",
    "ConfigError",
    "DifferentialPrivacy",
    "EvaluateResult",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedSGD",
    "FedYogi",
    "FedstreamError",
    "FitConfig",
    "FitTask",
    "InProcessTransport",
    "PaillierConfig",
    "Params",
    "ParamsMismatchError",
    "PrivacyBudgetExceeded",
    "RoundConfig",
    "RoundFailedError",
    "RoundReport",
    "SecAggConfig",
    "ServerState",
    "SimulationConfig",
    "SimulationResult",
    "TorchTrainer",
    "Trainer",
    "VectorizedTrainer",
    "WeightedSum",
    "WireFormatError",
    "__version__",
    "load_app",
    "make_strategy",
    "run_round",
    "run_rounds",
    "simulate",
]
