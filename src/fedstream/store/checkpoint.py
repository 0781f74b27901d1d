"""Checkpoints: a ``ServerState`` (and the report of the round that made it) on disk.

One folder per round, ``checkpoints/round-000012/``:

- ``params.safetensors`` — the global parameters (any safetensors reader opens it);
- ``optimizer.<name>.safetensors`` — each server-optimiser moment;
- ``clients.safetensors`` — in a simulation, every simulated client's durable state
  (``client.state``: error-feedback residuals, control variates, local model entries),
  which a deployment's clients keep on their own disks instead;
- ``in_flight.safetensors`` — in an asynchronous run, the arrays of its work in progress
  (``store.inflight``: model versions still trained from, updates trained but not ended);
- ``state.json`` — round, RNG state, privacy ledgers, DP clip bound, the round's report,
  the client ids of ``clients.safetensors``, an asynchronous run's events and tasks, and
  the SHA-256 of every file beside it.

A checkpoint is written into a hidden temporary folder and renamed into place, so a crash
leaves either the whole checkpoint or none; the loader ignores anything else. Loading
checks every hash, so a truncated or altered file is refused, not half-read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedstream.client.state import ClientState, checkpoint_layout, from_checkpoint_layout
from fedstream.errors import FedstreamError, WireFormatError
from fedstream.params import Params
from fedstream.privacy.accountant import POISSON, Entry, PrivacyLedger
from fedstream.store import inflight
from fedstream.types import RoundReport, ServerState

log = logging.getLogger("fedstream.store")

FORMAT = "fedstream-checkpoint-1"
CLIENTS_FILE = "clients.safetensors"
_PREFIX = "round-"


class CheckpointError(FedstreamError, ValueError):
    """A checkpoint is missing, incomplete, altered, or does not fit the run."""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checkpoint_dir(root: Path, round_number: int) -> Path:
    return root / f"{_PREFIX}{round_number:06d}"


def save_checkpoint(
    root: Path,
    state: ServerState,
    report: RoundReport | None = None,
    keep: int = 3,
    clients: Mapping[str, ClientState] | None = None,
) -> Path:
    """Write ``state`` (and the simulated ``clients``' states) under ``root`` atomically;
    keep only the newest ``keep`` checkpoints (0 keeps all). Returns the checkpoint's
    folder."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {"params.safetensors": state.params.to_bytes()}
    for name, moment in state.optimizer.items():
        files[f"optimizer.{name}.safetensors"] = moment.to_bytes()
    client_ids: list[str] = []
    if clients:
        files[CLIENTS_FILE], client_ids = checkpoint_layout(clients)
    in_flight = None
    if state.in_flight is not None:
        in_flight, arrays = inflight.to_document(state.in_flight)
        files[inflight.FILE] = arrays.to_bytes()
    document = {
        "format": FORMAT,
        "round": state.round,
        "rng_state": dict(state.rng_state),
        "accountant": {k: [list(e) for e in v.entries] for k, v in state.accountant.items()},
        "clip_norm": state.clip_norm,
        "optimizer": sorted(state.optimizer),
        "clients": client_ids,
        "report": report.to_dict() if report is not None else None,
        "in_flight": in_flight,
        "sha256": {name: _digest(data) for name, data in files.items()},
    }
    files["state.json"] = json.dumps(document, indent=1).encode()
    temporary = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
    try:
        for name, data in files.items():
            with (temporary / name).open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        final = checkpoint_dir(root, state.round)
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if keep > 0:
        for old in sorted(root.glob(f"{_PREFIX}*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path) -> tuple[ServerState, RoundReport | None]:
    """The state (and report) saved in ``folder``; every file's hash is checked."""
    document = _document(folder)

    def read(name: str) -> Params:
        try:
            return Params.from_bytes(_checked_bytes(folder, document, name)).copy()
        except WireFormatError as exc:
            raise CheckpointError(f"checkpoint {folder}: {name}: {exc}") from None

    try:
        state = ServerState(
            round=int(document["round"]),
            params=read("params.safetensors"),
            optimizer={n: read(f"optimizer.{n}.safetensors") for n in document["optimizer"]},
            accountant={
                level: PrivacyLedger(tuple(ledger_entry(e) for e in entries))
                for level, entries in document["accountant"].items()
            },
            clip_norm=document["clip_norm"],
            rng_state=document["rng_state"],
            in_flight=(
                inflight.from_document(document["in_flight"], read(inflight.FILE))
                if document.get("in_flight") is not None
                else None
            ),
        )
    except CheckpointError:
        raise  # a file that is missing or fails its hash says so itself
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {folder}: state.json lacks a field ({exc})") from None
    report = document.get("report")
    return state, RoundReport.from_dict(report) if report is not None else None


def load_client_states(folder: Path) -> dict[str, ClientState]:
    """The simulated clients' states saved in ``folder`` (none for a checkpoint without)."""
    document = _document(folder)
    ids = document.get("clients") or []
    if not ids:
        return {}
    try:
        return from_checkpoint_layout(_checked_bytes(folder, document, CLIENTS_FILE), ids)
    except (WireFormatError, ValueError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {folder}: {CLIENTS_FILE}: {exc}") from None


def _document(folder: Path) -> dict[str, Any]:
    try:
        document = json.loads((folder / "state.json").read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {folder}: state.json is missing") from None
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {folder}: state.json is not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {folder}: format is not {FORMAT!r}")
    return document


def _checked_bytes(folder: Path, document: Mapping[str, Any], name: str) -> bytes:
    """File ``name`` of the checkpoint, refused unless it matches its recorded SHA-256."""
    try:
        data = (folder / name).read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {folder}: {name} is missing") from None
    if _digest(data) != document["sha256"].get(name):
        raise CheckpointError(
            f"checkpoint {folder}: {name} does not match its SHA-256 in state.json "
            "(truncated or altered)"
        )
    return data


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint folder under ``root``, or ``None``."""
    folders = sorted(p for p in root.glob(f"{_PREFIX}*") if (p / "state.json").exists())
    return folders[-1] if folders else None


@dataclass(frozen=True)
class Restored:
    """The checkpoint a resume continues from, and the newer ones it had to pass over."""

    folder: Path
    state: ServerState
    report: RoundReport | None
    clients: dict[str, ClientState]
    skipped: tuple[str, ...] = ()


def newest_intact_checkpoint(root: Path) -> Restored | None:
    """The newest checkpoint under ``root`` whose every file matches its hash, passing over
    (and logging) newer ones that do not; ``None`` when there is none at all. When every
    checkpoint is damaged, the error names each one and why."""
    folders = sorted(p for p in root.glob(f"{_PREFIX}*") if (p / "state.json").exists())
    skipped: list[str] = []
    for folder in reversed(folders):
        try:
            state, report = load_checkpoint(folder)
            clients = load_client_states(folder)
        except CheckpointError as exc:
            skipped.append(str(exc))
            log.warning("skipping a damaged checkpoint: %s", exc)
            continue
        if skipped:
            log.warning(
                "resuming from %s (round %d), the newest intact checkpoint", folder.name,
                state.round,
            )  # fmt: skip
        return Restored(folder, state, report, clients, tuple(skipped))
    if skipped:
        raise CheckpointError("no intact checkpoint to resume from: " + "; ".join(skipped))
    return None


def ledger_entry(saved: list[float]) -> Entry:
    """A ledger entry as a checkpoint keeps it; three fields (before populations were
    kept) are Poisson entries."""
    noise, rate, steps, *rest = saved
    population = int(rest[0]) if rest else POISSON
    return float(noise), float(rate), int(steps), population
