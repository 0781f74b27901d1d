"""fedstream: federated learning that trains one model across many data holders without
moving their data, keeps what they send private and small, and serves the freshest model."""

__version__ = "0.1.0"

from fedstream.client import FitTask, TorchTrainer, Trainer, VectorizedTrainer  # noqa: E402
from fedstream.errors import (  # noqa: E402
    ClientFailure,
    ConfigError,
    FedstreamError,
    ParamsMismatchError,
    RoundFailedError,
    UpdateRejected,
    WireFormatError,
)
from fedstream.params import Params  # noqa: E402
from fedstream.rounds import RoundConfig, run_round, run_rounds  # noqa: E402
from fedstream.simulation import SimulationConfig, SimulationResult, simulate  # noqa: E402
from fedstream.strategies import (  # noqa: E402
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedSGD,
    FedYogi,
    make_strategy,
)
from fedstream.transport import InProcessTransport  # noqa: E402
from fedstream.types import (  # noqa: E402
    ClientUpdate,
    EvaluateResult,
    FitConfig,
    RoundReport,
    ServerState,
    WeightedSum,
)

__all__ = [
    "ClientFailure",
    "ClientUpdate",
    "ConfigError",
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
    "Params",
    "ParamsMismatchError",
    "RoundConfig",
    "RoundFailedError",
    "RoundReport",
    "ServerState",
    "SimulationConfig",
    "SimulationResult",
    "TorchTrainer",
    "Trainer",
    "UpdateRejected",
    "VectorizedTrainer",
    "WeightedSum",
    "__version__",
    "make_strategy",
    "run_round",
    "run_rounds",
    "simulate",
]
