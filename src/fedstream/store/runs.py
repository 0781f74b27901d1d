"""The run store: one SQLite file that records every run, round, client outcome and metric.

Each round is one transaction, so a crash leaves the store at a round boundary. The store
holds the history; the newest state to resume from lives in the run's checkpoints.

Tables: ``runs`` (id, status, config, output folder, error, rounds done, times),
``rounds`` (the whole ``RoundReport`` as JSON), ``client_results`` (one row per sampled
client: completed, or the stage and cause of its failure), ``metrics`` (one row per round
and metric, for queries and plots) and ``models``, the model registry: one immutable row
per aggregated round with the parameters (safetensors bytes), the architecture to rebuild
the module from, the round's metrics and the time.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedstream.errors import ConfigError, FedstreamError
from fedstream.types import RoundReport

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    output_dir TEXT,
    rounds_done INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    data TEXT
);
CREATE TABLE IF NOT EXISTS rounds (
    run_id TEXT NOT NULL REFERENCES runs(id),
    round INTEGER NOT NULL,
    finished REAL NOT NULL,
    report TEXT NOT NULL,
    PRIMARY KEY (run_id, round)
);
CREATE TABLE IF NOT EXISTS client_results (
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    client_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    stage TEXT,
    cause TEXT
);
CREATE INDEX IF NOT EXISTS client_results_by_round ON client_results (run_id, round);
CREATE TABLE IF NOT EXISTS models (
    run_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    created REAL NOT NULL,
    architecture TEXT NOT NULL,
    metrics TEXT NOT NULL,
    params BLOB NOT NULL,
    PRIMARY KEY (run_id, version)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, round, name)
);
"""

STATUSES = ("running", "finished", "failed")


class StoreError(FedstreamError):
    """The run store's file cannot be read as a SQLite database: it names the file and how
    to recover."""

    def __init__(self, path: Path, cause: Exception) -> None:
        super().__init__(
            f"the run store {path} cannot be read ({type(cause).__name__}: {cause}). Move it "
            "aside (or pass another --store); each run's checkpoints/ folder still holds its "
            "state, and `fedstream run --resume <run folder>` continues from there"
        )
        self.path = path


class RunStore:
    """A SQLite run store at ``path`` (created with its tables if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            if "data" not in columns:  # a store made before runs named their data
                db.execute("ALTER TABLE runs ADD COLUMN data TEXT")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise StoreError(self.path, exc) from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        except sqlite3.DatabaseError as exc:  # not a database, or a damaged one
            raise StoreError(self.path, exc) from None
        finally:
            db.close()

    def start_run(
        self,
        run_id: str,
        config: Mapping[str, Any],
        output_dir: str | None,
        data: str | None = None,
    ) -> None:
        """Record a new run, or mark an existing one running again (a resume). ``data``
        names what it trains on (a built-in data set, or a user's app by its name)."""
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (id, created, updated, status, config, output_dir, data) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "updated = excluded.updated, status = 'running', error = NULL, "
                "config = excluded.config, data = COALESCE(excluded.data, runs.data)",
                (run_id, now, now, json.dumps(dict(config)), output_dir, data),
            )

    def record_round(self, run_id: str, report: RoundReport) -> None:
        """Store one round's report, client outcomes and metrics in one transaction."""
        failed = {f.client_id: f for f in report.failures}
        rows: list[tuple[str, int, str, str, str | None, str | None]] = [
            (run_id, report.round, c, "completed", None, None) for c in report.completed
        ]
        rows += [(run_id, report.round, c, "failed", f.stage, f.cause) for c, f in failed.items()]
        with self._connect() as db:
            db.execute(
                "DELETE FROM client_results WHERE run_id = ? AND round = ?", (run_id, report.round)
            )
            db.execute(
                "INSERT OR REPLACE INTO rounds (run_id, round, finished, report) "
                "VALUES (?, ?, ?, ?)",
                (run_id, report.round, time.time(), json.dumps(report.to_dict())),
            )
            db.executemany("INSERT INTO client_results VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.executemany(
                "INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?)",
                [(run_id, report.round, k, v) for k, v in report.metrics.items()],
            )
            db.execute(
                "UPDATE runs SET rounds_done = MAX(rounds_done, ?), updated = ? WHERE id = ?",
                (report.round, time.time(), run_id),
            )

    def forget_after(self, run_id: str, round_number: int) -> None:
        """Drop rounds after ``round_number`` (a resume recomputes them exactly)."""
        with self._connect() as db:
            for table in ("rounds", "client_results", "metrics"):
                db.execute(
                    f"DELETE FROM {table} WHERE run_id = ? AND round > ?", (run_id, round_number)
                )
            db.execute("UPDATE runs SET rounds_done = ? WHERE id = ?", (round_number, run_id))

    def has_run(self, run_id: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None

    def delete_run(self, run_id: str) -> None:
        """Drop everything of ``run_id``: its rounds, their client results and metrics, and
        its published models, together (a run folder overwritten by a new run)."""
        with self._connect() as db:
            for table in ("rounds", "client_results", "metrics", "models"):
                db.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def finish_run(self, run_id: str, error: str | None = None) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status = ?, error = ?, updated = ? WHERE id = ?",
                ("failed" if error else "finished", error, time.time(), run_id),
            )

    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest first, without its rounds but with the metrics of its last
        recorded round (``last_metrics``, empty before round 1)."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM runs ORDER BY created DESC").fetchall()
            last = {
                run_id: json.loads(report)["metrics"]
                for run_id, report in db.execute(
                    "SELECT run_id, report FROM rounds AS r WHERE round = "
                    "(SELECT MAX(round) FROM rounds WHERE run_id = r.run_id)"
                )
            }
        return [
            {**dict(r), "config": json.loads(r["config"]), "last_metrics": last.get(r["id"], {})}
            for r in rows
        ]

    def run(self, run_id: str) -> dict[str, Any]:
        """One run with its rounds' reports; an unknown id names the ones that exist."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                known = [r[0] for r in db.execute("SELECT id FROM runs ORDER BY created")]
                raise ConfigError("run", run_id, f"one of the runs in {self.path}: {known}")
            reports = db.execute(
                "SELECT report FROM rounds WHERE run_id = ? ORDER BY round", (run_id,)
            ).fetchall()
        return {
            **dict(row),
            "config": json.loads(row["config"]),
            "rounds": [json.loads(r["report"]) for r in reports],
        }

    def publish_model(
        self,
        run_id: str,
        version: int,
        architecture: Mapping[str, Any],
        metrics: Mapping[str, float],
        params: bytes,
    ) -> bool:
        """Add model ``version`` of ``run_id``; versions are immutable, so publishing one that
        exists changes nothing (a resumed run republishes the same bytes) and says so."""
        with self._connect() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO models VALUES (?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    version,
                    time.time(),
                    json.dumps(dict(architecture)),
                    json.dumps(dict(metrics)),
                    params,
                ),
            )
            return cursor.rowcount == 1

    def models(self, run_id: str) -> list[dict[str, Any]]:
        """Every published version of ``run_id``, oldest first, without the parameters."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT version, created, architecture, metrics FROM models WHERE run_id = ? "
                "ORDER BY version",
                (run_id,),
            ).fetchall()
        return [
            {
                "version": r["version"],
                "created": r["created"],
                "architecture": json.loads(r["architecture"]),
                "metrics": json.loads(r["metrics"]),
            }
            for r in rows
        ]

    def model(self, run_id: str, version: int | None = None) -> tuple[dict[str, Any], bytes]:
        """(metadata, safetensors bytes) of ``version`` (the newest when ``None``); an
        unknown version is a ``KeyError`` naming the ones there are."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            query = "SELECT * FROM models WHERE run_id = ? " + (
                "AND version = ?" if version is not None else "ORDER BY version DESC LIMIT 1"
            )
            args: tuple[Any, ...] = (run_id, version) if version is not None else (run_id,)
            row = db.execute(query, args).fetchone()
        if row is None:
            known = [m["version"] for m in self.models(run_id)]
            raise KeyError(f"run {run_id!r} has no model version {version}; it has {known}")
        meta = {
            "version": row["version"],
            "created": row["created"],
            "architecture": json.loads(row["architecture"]),
            "metrics": json.loads(row["metrics"]),
        }
        return meta, bytes(row["params"])

    def reports(self, run_id: str) -> list[RoundReport]:
        return [RoundReport.from_dict(r) for r in self.run(run_id)["rounds"]]
