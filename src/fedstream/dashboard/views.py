"""What the dashboard shows, as plain JSON-ready data read from the run store: pure
functions of the store's rows, so each is tested without a browser."""

from __future__ import annotations

from typing import Any

from fedstream.store.runs import RunStore
from fedstream.store.views import data_name, describe_config, headline, setting


def runs_view(store: RunStore) -> list[dict[str, Any]]:
    """One row per run, newest first: id, status, rounds done and planned, the strategy
    as a person names it, the data, the last round's metrics and their headline."""
    rows = []
    for run in store.runs():
        config = run["config"]
        rows.append(
            {
                "id": run["id"],
                "status": run["status"],
                "rounds_done": run["rounds_done"],
                "rounds": setting(config, "run", "rounds"),
                "label": describe_config(config)[0],
                "data": data_name(run),
                "last_metrics": run["last_metrics"],
                "headline": headline(run["last_metrics"]),
                "started": run["created"],
                "error": run["error"],
            }
        )
    return rows


def _round_row(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "round": report["round"],
        "sampled": len(report["sampled"]),
        "completed": len(report["completed"]),
        "failures": report["failures"],
        "bytes_up": report["bytes_up"],
        "bytes_down": report["bytes_down"],
        "seconds": report["times"].get("total_s"),
        "metrics": report["metrics"],
    }


def run_view(store: RunStore, run_id: str) -> dict[str, Any]:
    """One run: its status and settings (those that differ from the defaults), every
    round (clients sampled, answered, failed with stage and cause; traffic; time;
    metrics), each client's latest evaluation, and the model versions published."""
    run = store.run(run_id)
    label, changed = describe_config(run["config"])
    latest: dict[str, dict[str, Any]] = {}
    for report in run["rounds"]:
        for client, metrics in report.get("evaluations", {}).items():
            latest[client] = {"round": report["round"], **metrics}
    return {
        "id": run_id,
        "status": run["status"],
        "error": run["error"],
        "label": label,
        "settings": [[key, value] for key, value in changed],
        "rounds_done": run["rounds_done"],
        "rounds_planned": setting(run["config"], "run", "rounds"),
        "rounds": [_round_row(report) for report in run["rounds"]],
        "clients": dict(sorted(latest.items())),
        "models": [
            {"version": m["version"], "created": m["created"], "metrics": m["metrics"]}
            for m in store.models(run_id)
        ],
    }
