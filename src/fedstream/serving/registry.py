"""The served model: versions from the run store's registry, rebuilt and swapped in.

A ``ModelRegistry`` holds the current ``LoadedModel``. With ``follow`` a background thread
polls the store for newer versions and swaps each in; a swap replaces one reference, so a
reader sees the old model or the new one, never a mix.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedstream.app import load_app
from fedstream.client.runtime import model_in_use
from fedstream.client.state import ClientState
from fedstream.client.torch_trainer import load_params
from fedstream.errors import ConfigError, FedstreamError, WireFormatError
from fedstream.models import build_model
from fedstream.params import Params
from fedstream.serving.personal import PersonalSource
from fedstream.store.runs import RunStore

log = logging.getLogger("fedstream.serving")


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

    @property
    def vocab_size(self) -> int | None:
        """For a model whose inputs are token ids (``fedstream.llm``), how many ids there
        are: an input must lie in ``[0, vocab_size)``. ``None`` for other models."""
        size = getattr(self.module, "vocab_size", None)
        return size if isinstance(size, int) else None


class ModelLoadError(FedstreamError, ValueError):
    """A model version cannot be served: its architecture cannot be built, its params do
    not fit it, or one forward pass fails or is not finite."""

    def __init__(self, version: int | None, reason: str) -> None:
        self.version = version
        self.reason = reason
        super().__init__(f"model version {version}: {reason}")


def build_version(
    version: int,
    arch: Mapping[str, Any],
    metrics: Mapping[str, float],
    blob: bytes,
    app: str | None = None,
    personal: ClientState | None = None,
) -> LoadedModel:
    """Model ``version`` rebuilt from its architecture (a built-in model, or the app that
    made it; ``app`` names one for a run whose app was a Python object) with the params in
    ``blob``, or with those of the model a client uses given its state ``personal``
    (``serving.personal``), checked by one forward pass on a zero input when the input
    shape is known. Anything that would stop it from serving is a ``ModelLoadError``
    saying what."""
    try:
        module = _build(arch, app)
        params = Params.from_bytes(blob)
        if personal is not None:
            params = model_in_use(params, personal)
        load_params(module, params)
        module = for_inference(module)
        module.eval()
        loaded = LoadedModel(version, module, arch, metrics)
        shape = loaded.input_shape
        if shape is not None:
            with torch.no_grad():
                output = module(torch.from_numpy(np.zeros((1, *shape), probe_dtype(loaded.dtype))))
            if not bool(torch.isfinite(output).all()):
                raise ModelLoadError(version, "a forward pass on a zero input is not finite")
    except ModelLoadError:
        raise
    except (ConfigError, WireFormatError, RuntimeError, KeyError, TypeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:400] or "no detail"  # torch's span many lines
        raise ModelLoadError(version, f"{type(exc).__name__}: {reason}") from None
    return loaded


def for_inference(module: torch.nn.Module) -> torch.nn.Module:
    """The form of ``module`` that serves: what its ``for_inference()`` returns, when it has
    one (``fedstream.llm`` models fold their LoRA adapters into the base weights), else
    the module itself."""
    prepare = getattr(module, "for_inference", None)
    if not callable(prepare):
        return module
    prepared = prepare()
    if not isinstance(prepared, torch.nn.Module):
        raise ConfigError("for_inference()", type(prepared).__name__, "an nn.Module")
    return prepared


def probe_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype of the zero input that checks a loaded model: the recorded one for whole
    numbers (token ids, character codes), float64 for float64 data, else float32."""
    if np.issubdtype(dtype, np.integer):
        return dtype
    return np.dtype(np.float64 if dtype == np.float64 else np.float32)


def _build(arch: Mapping[str, Any], app: str | None) -> torch.nn.Module:
    if "model" in arch:
        dtype = torch.float64 if arch["dtype"] == "float64" else torch.float32
        hidden = tuple(arch["hidden"]) if arch.get("hidden") else None
        return build_model(
            arch["model"], arch["in_features"], arch["out_features"], arch["seed"], hidden, dtype
        )
    path = app or arch.get("app")
    if path is None:
        raise ConfigError("--app", None, "the app that made this run (it ran from a Python object)")
    module = load_app(path).build_model(int(arch["seed"]))
    if not isinstance(module, torch.nn.Module):
        raise ConfigError("--app", path, "an app with a PyTorch model (serving runs torch)")
    return module


def load_model(
    store: RunStore,
    run_id: str,
    version: int | None,
    app: str | None = None,
    personal: PersonalSource | None = None,
) -> LoadedModel:
    """Version ``version`` (the newest for ``None``) of ``run_id``'s model, ready to serve
    (``build_version``); with ``personal``, the model that client uses over it."""
    meta, blob = store.model(run_id, version)
    arch = meta["architecture"]
    if "model" not in arch and (app or arch.get("app")) is None:  # the server's setting
        raise ConfigError(
            "--app", None, f"the app that made run {run_id!r} (it ran from a Python object)"
        )
    state = personal.state() if personal is not None else None
    return build_version(meta["version"], arch, meta["metrics"], blob, app, state)


class ModelRegistry:
    """The current model of run ``run_id``: ``pinned`` to a version, or following the
    newest (polling every ``poll_s``), or with ``personal`` the model that client uses over
    each version. ``on_swap`` is told of every swap after the first."""

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
        personal: PersonalSource | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.pinned = pinned
        self.follow = follow and pinned is None
        self.poll_s = poll_s
        self.app = app  # the app that made the run, when it does not name one itself
        self.personal = personal
        self.current: LoadedModel | None = None
        self._on_swap = on_swap
        self.broken: dict[int, str] = {}  # version → why it cannot be served
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def swap_to(self, version: int | None) -> LoadedModel:
        loaded = load_model(self.store, self.run_id, version, self.app, self.personal)
        with self._lock:
            if self.current is None or self.current.version != loaded.version:
                if self.current is not None and self._on_swap is not None:
                    self._on_swap()
                self.current = loaded  # one reference: a batch sees the old or the new
        return loaded

    def refresh(self) -> None:
        """Swap in the newest version that loads. A version that does not is recorded in
        ``broken`` with why, logged once, and passed over for good: an older good one (or
        the current) goes on serving, and a newer good one is still picked up."""
        current = self.current.version if self.current is not None else None
        versions = sorted((m["version"] for m in self.store.models(self.run_id)), reverse=True)
        for version in versions:
            if current is not None and version <= current:
                return
            if version in self.broken:
                continue
            try:
                self.swap_to(version)
                return
            except ModelLoadError as exc:
                self.broken[version] = exc.reason
                log.warning("passing over %s", exc)

    def _follow(self) -> None:
        problem = None
        while not self._stop.wait(self.poll_s):
            if not self.follow:
                continue
            try:
                self.refresh()
                problem = None
            except Exception as exc:  # the store may be mid-write by the trainer: try again
                if str(exc) != problem:  # said once until it changes
                    log.warning("could not read the run store (retrying): %s", exc)
                    problem = str(exc)

    def start(self) -> None:
        try:
            if self.pinned is not None or not self.follow:
                self.swap_to(self.pinned)
            else:
                self.refresh()
        except KeyError:
            if not self.follow:
                raise
        threading.Thread(target=self._follow, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
