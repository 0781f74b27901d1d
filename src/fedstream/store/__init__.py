"""Persistence: checkpoints of the server state and the SQLite run store."""

from fedstream.store.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from fedstream.store.runs import RunStore, StoreError

__all__ = [
    "CheckpointError",
    "RunStore",
    "StoreError",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]
