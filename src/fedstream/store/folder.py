"""A run folder: claimed by one run at a time, and holding that run's history.

- :func:`claim_run_folder` takes an exclusive lock on the folder for the life of the run
  (a second run on it is refused, naming the process that holds it), and refuses a folder
  that already holds something unless the run resumes it or is told to overwrite it.
- :class:`RoundHistory` is ``rounds.jsonl``: every round's report, appended as the round
  ends. It lives in the folder, so the history goes wherever the checkpoints go: a resume
  rebuilds the run store's record of the run from it when the store was lost or another
  store is given.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedstream.errors import ConfigError
from fedstream.store.checkpoint import CheckpointError
from fedstream.types import RoundReport

LOCK_FILE = ".lock"
HISTORY_FILE = "rounds.jsonl"
RUN_MARKER = "config.json"  # what makes a folder a run folder (written as a run starts)


@contextmanager
def claim_run_folder(out: Path, *, resume: bool, overwrite: bool) -> Iterator[Path]:
    """Hold ``out`` for one run: created if need be, locked (``flock``) until the block
    ends. A new run needs a folder that is empty; ``overwrite`` clears a run folder first
    (never a folder that is not one), and ``resume`` continues the run in it."""
    if resume and overwrite:
        raise ConfigError("overwrite", True, "not together with resume")
    out.mkdir(parents=True, exist_ok=True)
    lock_path = out / LOCK_FILE
    handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_path.read_text().strip() or "another process"
            raise ConfigError(
                "output_dir", str(out), f"a folder no other run is using ({holder} holds it)"
            ) from None
        os.ftruncate(handle, 0)
        os.write(handle, f"process {os.getpid()}\n".encode())
        if not resume:
            _make_room(out, overwrite)
        yield out
    finally:
        os.close(handle)  # releases the lock


def _make_room(out: Path, overwrite: bool) -> None:
    """Leave ``out`` empty (but for the lock) for a new run, or say why not."""
    contents = [p for p in out.iterdir() if p.name != LOCK_FILE]
    if not contents:
        return
    if not overwrite:
        raise ConfigError(
            "output_dir",
            str(out),
            "an empty or new folder: it holds "
            f"{', '.join(sorted(p.name for p in contents)[:4])}; continue that run with "
            "--resume, clear it with --overwrite, or choose another folder",
        )
    if not (out / RUN_MARKER).exists():
        raise ConfigError(
            "output_dir",
            str(out),
            f"a run folder to overwrite (it has no {RUN_MARKER}, so it is not one; nothing "
            "was deleted)",
        )
    for path in contents:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


class RoundHistory:
    """``rounds.jsonl`` in a run folder: one line per finished round, in order."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / HISTORY_FILE

    def exists(self) -> bool:
        return self.path.exists()

    def append(self, report: RoundReport) -> None:
        """Add ``report`` durably (written and synced before the round counts as done)."""
        line = json.dumps(report.to_dict(), separators=(",", ":")) + "\n"
        with self.path.open("a") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())

    def read(self, up_to: int) -> list[RoundReport]:
        """The reports of rounds 1…``up_to``, and the file cut back to them: a line a
        crash left half-written, or rounds after ``up_to`` (a resume reruns them), go."""
        if not self.path.exists():
            return []
        kept: dict[int, RoundReport] = {}
        lines = self.path.read_text().splitlines(keepends=True)
        for number, line in enumerate(lines, 1):
            if not line.endswith("\n"):
                break  # the tail of an interrupted append
            try:
                report = RoundReport.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(
                    f"{self.path}, line {number}, is damaged ({exc}): move it aside to resume "
                    "from the run store's record of the rounds"
                ) from None
            if report.round <= up_to:
                kept[report.round] = report
        reports = [kept[r] for r in sorted(kept)]
        text = "".join(json.dumps(r.to_dict(), separators=(",", ":")) + "\n" for r in reports)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(text)
        os.replace(temporary, self.path)
        return reports
