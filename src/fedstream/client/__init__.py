"""Client-side training: the Trainer interface, the PyTorch adapter, the vectorised trainer."""

from fedstream.client.base import CohortTrainer, FitTask, Trainer
from fedstream.client.torch_trainer import TorchTrainer, params_from_module
from fedstream.client.vectorized import VectorizedTrainer

__all__ = [
    "CohortTrainer",
    "FitTask",
    "TorchTrainer",
    "Trainer",
    "VectorizedTrainer",
    "params_from_module",
]
