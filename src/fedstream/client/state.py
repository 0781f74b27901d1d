"""What a client keeps between rounds, in one place owned by the client side.

A client's durable state is a ``ClientState``: named ``Params`` such as ``"residual"``
(compression error feedback), ``"scaffold.c"`` (SCAFFOLD's control variate) or
``"local"`` (model entries that never leave the client: BatchNorm counters, FedBN's
statistics). Training takes a client's state in and gives the next one back; nothing of it
hides on a trainer or a transport.

Where it is kept:

- in a simulation, :class:`MemoryClientStates` holds every simulated device's state, and
  the run's checkpoint saves it, so a resumed run continues bit for bit;
- in a deployment, :class:`DiskClientState` keeps one client's state on its own disk,
  written atomically after every change, so it survives a restart of the client.

The server never reads either: in a simulation the engine only copies the store into and
out of checkpoints, as a device's own backup would.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy.typing as npt

from fedstream.errors import ConfigError, WireFormatError
from fedstream.params import Params

Array = npt.NDArray[Any]
ClientState = Mapping[str, Params]
"""One client's durable state: entry name (no ``/``) → ``Params``."""

EMPTY: ClientState = {}
_SEPARATOR = "/"


def _join(groups: Mapping[str, Params]) -> Params:
    """One ``Params`` whose names are ``<group>/<param name>``."""
    return Params(
        {
            f"{group}{_SEPARATOR}{name}": array
            for group, params in groups.items()
            for name, array in params.items()
        }
    )


def _split(flat: Params) -> dict[str, Params]:
    """The inverse of :func:`_join`, splitting each name at its first ``/``; the arrays
    are copies the caller owns."""
    grouped: dict[str, dict[str, Array]] = {}
    for key, array in flat.items():
        group, separator, name = key.partition(_SEPARATOR)
        if not separator or not name:
            raise WireFormatError(f"client state key {key!r}: expected '<entry>/<param name>'")
        grouped.setdefault(group, {})[name] = array.copy()
    return {group: Params(arrays) for group, arrays in grouped.items()}


def encode_state(state: ClientState) -> bytes:
    """``state`` as one ``Params`` buffer (safetensors layout) whose entry names are
    ``<entry>/<param name>``."""
    for entry in state:
        if not entry or _SEPARATOR in entry:
            raise ConfigError("client state entry", entry, "a non-empty name without '/'")
    return _join(state).to_bytes()


def decode_state(data: bytes) -> ClientState:
    """The inverse of :func:`encode_state`."""
    return _split(Params.from_bytes(data))


class MemoryClientStates(Mapping[str, ClientState]):
    """Every simulated client's state, by client id; a client never seen has none."""

    def __init__(self, states: Mapping[str, ClientState] | None = None) -> None:
        self._states: dict[str, ClientState] = dict(states or {})

    def __getitem__(self, client_id: str) -> ClientState:
        return self._states[client_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def of(self, client_id: str) -> ClientState:
        """``client_id``'s state, empty for a client that has none yet."""
        return self._states.get(client_id, EMPTY)

    def put(self, client_id: str, state: ClientState) -> None:
        """Keep ``state`` as the client's (an empty one forgets the client)."""
        if state:
            self._states[client_id] = dict(state)
        else:
            self._states.pop(client_id, None)

    def snapshot(self) -> dict[str, ClientState]:
        """The states as they are now (values are immutable, so no copy is needed)."""
        return dict(self._states)

    def restore(self, states: Mapping[str, ClientState]) -> None:
        """Replace every state with ``states`` (a checkpoint's)."""
        self._states = {c: dict(s) for c, s in states.items() if s}


class DiskClientState:
    """One deployed client's state in ``folder/state.safetensors``.

    Written to a temporary file, flushed to disk and renamed over the old one, so a crash
    leaves the old state or the new one, never a mix. An unreadable file is an error that
    names it, never silently an empty state: losing a SCAFFOLD variate or a residual
    quietly would change the training.
    """

    FILE = "state.safetensors"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / self.FILE

    def load(self) -> ClientState:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return EMPTY
        try:
            return decode_state(data)
        except WireFormatError as exc:
            raise ConfigError(
                "--state-dir", str(self.path), f"a client state file ({exc})"
            ) from None

    def save(self, state: ClientState) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".state-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(encode_state(state))
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def checkpoint_layout(states: Mapping[str, ClientState]) -> tuple[bytes, list[str]]:
    """Many clients' states as one buffer, for a checkpoint, and the client ids in the
    order its names refer to them: ``<position>/<entry>/<param name>``."""
    ids = sorted(states)
    groups = {
        f"{position}{_SEPARATOR}{entry}": params
        for position, client_id in enumerate(ids)
        for entry, params in states[client_id].items()
    }
    return _join(groups).to_bytes(), ids


def from_checkpoint_layout(data: bytes, ids: list[str]) -> dict[str, ClientState]:
    """The inverse of :func:`checkpoint_layout`."""
    states: dict[str, dict[str, Params]] = {}
    for position, entries in _split(Params.from_bytes(data)).items():
        client_id = ids[int(position)]
        states[client_id] = _split(entries)
    return dict(states)
