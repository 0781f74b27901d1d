"""fedstream's cache folder, and arrays made once and then read from it.

Data that takes seconds to make and never changes for the same inputs (MNIST-1D's
generator, a tokenised corpus) is made once per machine rather than once per process: a
deployment starts a process per client, and each would otherwise redo the work.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np


def cache_dir() -> Path:
    """``$FEDSTREAM_CACHE`` or ``~/.cache/fedstream``."""
    root = os.environ.get("FEDSTREAM_CACHE") or Path.home() / ".cache" / "fedstream"
    return Path(root)


Arrays = dict[str, np.ndarray]


def cached_arrays(path: Path, make: Callable[[], Mapping[str, np.ndarray]]) -> Arrays:
    """The arrays stored at ``path`` (an ``.npz``), made by ``make`` and stored there first
    when absent or unreadable. The file is written beside its place and renamed into it,
    so a process reading concurrently sees all of it or nothing."""
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            pass  # a damaged file is made again below
    made = {name: np.asarray(array) for name, array in make().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.npz")
    np.savez(partial, **made)  # type: ignore[arg-type]
    partial.replace(path)
    return made
