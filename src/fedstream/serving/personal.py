"""Serving one client's personal model: that client's own parts over each global version.

Personalised runs leave part of the model on the clients (``client.local``: FedPer's and
FedRep's heads, FedBN's batch norm) or a whole model (Ditto's v_i). The server's global
model alone is then not what any client uses. ``fedstream serve --client ID`` answers with
the model client ``ID`` uses (``client.runtime.model_in_use``), rebuilt for every global
version it serves, from that client's state:

- a deployed client's own state folder (its ``--state-dir``), which only the client's
  machine holds: serving a personal model happens where its owner allows;
- or, for a simulated run, the simulated devices' states in the run's newest intact
  checkpoint (so a head may be from a few rounds before the newest global body when
  checkpoints are sparser than published versions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fedstream.client.state import ClientState, DiskClientState
from fedstream.errors import ConfigError
from fedstream.store.checkpoint import newest_intact_checkpoint


@dataclass(frozen=True)
class PersonalSource:
    """Where client ``client_id``'s state is read from: ``state_dir`` (a deployed client's
    ``--state-dir``) or else ``run_folder`` (a simulated run's folder)."""

    client_id: str
    state_dir: Path | None = None
    run_folder: Path | None = None

    def state(self) -> ClientState:
        """The client's state now, read afresh (it changes as training goes on). A client
        that keeps nothing of its own is an error: its model is the global one."""
        if self.state_dir is not None:
            where = f"the client state folder {self.state_dir}"
            state = DiskClientState(self.state_dir).load()
        elif self.run_folder is not None:
            where = f"the newest checkpoint of {self.run_folder}"
            restored = newest_intact_checkpoint(self.run_folder / "checkpoints")
            state = restored.clients.get(self.client_id, {}) if restored is not None else {}
        else:
            raise ConfigError("--client-state", None, "a client state folder or a run folder")
        if not state:
            raise ConfigError(
                "--client",
                self.client_id,
                f"a client with a model of its own in {where} (this one has none: it has "
                "not trained yet, or the run keeps nothing on its clients)",
            )
        return state
