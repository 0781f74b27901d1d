"""fedstream: federated learning that trains one model across many data holders without
moving their data, keeps what they send private and small, and serves the freshest model."""

__version__ = "0.1.0"

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
