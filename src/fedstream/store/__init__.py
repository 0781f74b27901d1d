"""Persistence: checkpoints of the server state and the SQLite run store."""

from fedstream.store.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from fedstream.store.runs import RunStore

__all__ = [
    "CheckpointError",
    "RunStore",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]
