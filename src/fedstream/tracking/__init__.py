"""Watching a run from outside: the callbacks the run loop calls (``RunCallback``), and
loggers built on them for TensorBoard and MLflow (optional extras:
``pip install 'fedstream[tracking]'``)."""

from fedstream.tracking.base import RunCallback, RunStart, flat_settings, notify
from fedstream.tracking.mlflow import MLflowLogger
from fedstream.tracking.tensorboard import TensorBoardLogger

__all__ = [
    "MLflowLogger",
    "RunCallback",
    "RunStart",
    "TensorBoardLogger",
    "flat_settings",
    "notify",
]
