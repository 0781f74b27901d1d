"""The served model: versions from the run store's registry, rebuilt and swapped in.

A ``ModelRegistry`` holds the current ``LoadedModel``. With ``follow`` a background thread
polls the store for newer versions and swaps each in; a swap replaces one reference, so a
reader sees the old model or the new one, never a mix.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedstream.app import is_torch, load_app
from fedstream.errors import ConfigError
from fedstream.models import build_model
from fedstream.params import Params
from fedstream.store.runs import RunStore


@dataclass(frozen=True)
class LoadedModel:
    """One immutable model version, ready to run."""

    version: int
    module: torch.nn.Module
    architecture: Mapping[str, Any]
    metrics: Mapping[str, float]

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one input row, or ``None`` when the run did not record it."""
        if "in_features" in self.architecture:
            return (int(self.architecture["in_features"]),)
        shape = self.architecture.get("input_shape")
        return tuple(int(n) for n in shape) if shape is not None else None

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(str(self.architecture["dtype"]))


def load_model(
    store: RunStore, run_id: str, version: int | None, app: str | None = None
) -> LoadedModel:
    """Version ``version`` (the newest for ``None``) of ``run_id``'s model, rebuilt from its
    architecture: a built-in model, or the run's app (``app`` names it for a run whose
    app was a Python object)."""
    meta, blob = store.model(run_id, version)
    arch = meta["architecture"]
    if "model" in arch:
        dtype = torch.float64 if arch["dtype"] == "float64" else torch.float32
        hidden = tuple(arch["hidden"]) if arch.get("hidden") else None
        module = build_model(
            arch["model"], arch["in_features"], arch["out_features"], arch["seed"], hidden, dtype
        )
    else:
        path = app or arch.get("app")
        if path is None:
            raise ConfigError(
                "--app", None, f"the app that made run {run_id!r} (it ran from a Python object)"
            )
        module = load_app(path).build_model(int(arch["seed"]))
        if not is_torch(module):
            raise ConfigError("--app", path, "an app with a PyTorch model (serving runs torch)")
    params = Params.from_bytes(blob)
    module.load_state_dict({n: torch.from_numpy(np.array(a)) for n, a in params.items()})
    module.eval()
    return LoadedModel(meta["version"], module, arch, meta["metrics"])


class ModelRegistry:
    """The current model of run ``run_id``: ``pinned`` to a version, or following the
    newest (polling every ``poll_s``). ``on_swap`` is told of every swap after the first."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        *,
        pinned: int | None = None,
        follow: bool = True,
        poll_s: float = 0.2,
        app: str | None = None,
        on_swap: Any = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.pinned = pinned
        self.follow = follow and pinned is None
        self.poll_s = poll_s
        self.app = app  # the app that made the run, when it does not name one itself
        self.current: LoadedModel | None = None
        self._on_swap = on_swap
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def swap_to(self, version: int | None) -> LoadedModel:
        loaded = load_model(self.store, self.run_id, version, self.app)
        with self._lock:
            if self.current is None or self.current.version != loaded.version:
                if self.current is not None and self._on_swap is not None:
                    self._on_swap()
                self.current = loaded  # one reference: a batch sees the old or the new
        return loaded

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            if not self.follow:
                continue
            try:
                newest = self.store.models(self.run_id)
                if newest and (
                    self.current is None or newest[-1]["version"] > self.current.version
                ):
                    self.swap_to(newest[-1]["version"])
            except Exception:  # the store may be mid-write by the trainer; try again
                continue

    def start(self) -> None:
        try:
            self.swap_to(self.pinned)
        except KeyError:
            if not self.follow:
                raise
        threading.Thread(target=self._follow, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
