"""An asynchronous run's work in progress (``rounds.buffered.InFlight``) in a checkpoint:
a JSON document for the events, tasks and outcomes' headers, and one safetensors file of
every array (the model versions tasks still train from, the trained updates not yet
ended), named ``version/<number>/<entry>`` and ``outcome/<client id>/<entry>``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedstream.client.base import FitTask
from fedstream.errors import ClientFailure
from fedstream.params import Params
from fedstream.rounds.fleet import Event, InFlight
from fedstream.transport.grpc.codec import fit_config_from_dict, fit_config_to_dict
from fedstream.types import ClientUpdate

FILE = "in_flight.safetensors"


def _task_to_dict(task: FitTask) -> dict[str, Any]:
    if task.correction is not None or task.noise_seed is not None or task.frozen:
        raise ValueError(f"task of {task.client_id!r}: the buffered loop sends only plain tasks")
    return {
        "client": task.client_id,
        "round": task.round,
        "config": fit_config_to_dict(task.config),
        "data_time": task.data_time,
    }


def _task_from_dict(data: Mapping[str, Any]) -> FitTask:
    time = data.get("data_time")
    return FitTask(
        str(data["client"]),
        int(data["round"]),
        fit_config_from_dict(data["config"]),
        data_time=float(time) if time is not None else None,
    )


def to_document(in_flight: InFlight) -> tuple[dict[str, Any], Params]:
    """``in_flight`` as (JSON-ready document, arrays)."""
    arrays: dict[str, Any] = {}
    for number, (params, _) in in_flight.versions.items():
        arrays.update({f"version/{number}/{n}": a for n, a in params.items()})
    outcomes: dict[str, Any] = {}
    for client, outcome in in_flight.outcomes.items():
        if isinstance(outcome, ClientFailure):
            outcomes[client] = {"failure": [outcome.stage, outcome.cause]}
            continue
        arrays.update({f"outcome/{client}/{n}": a for n, a in outcome.payload.items()})
        outcomes[client] = {
            "round": outcome.round,
            "weight": outcome.weight,
            "metrics": dict(outcome.metrics),
            "extras": dict(outcome.extras),
            "entries": list(outcome.payload),
        }
    document = {
        "now": in_flight.now,
        "next_order": in_flight.next_order,
        "events": [
            {
                "time": e.time,
                "order": e.order,
                "task": _task_to_dict(e.task) if e.task is not None else None,
                "completed": e.completed,
                "started": e.started,
            }
            for e in in_flight.events
        ],
        "outcomes": outcomes,
        "versions": {
            str(n): {"config": fit_config_to_dict(fit), "entries": list(params)}
            for n, (params, fit) in in_flight.versions.items()
        },
    }
    return document, Params(arrays)


def from_document(document: Mapping[str, Any], arrays: Params) -> InFlight:
    """The ``InFlight`` that ``to_document`` wrote (a malformed one raises ``KeyError``,
    ``TypeError`` or ``ValueError``)."""
    versions = {
        int(n): (
            Params({e: arrays[f"version/{n}/{e}"] for e in saved["entries"]}),
            fit_config_from_dict(saved["config"]),
        )
        for n, saved in document["versions"].items()
    }
    outcomes: dict[str, ClientUpdate | ClientFailure] = {}
    for client, saved in document["outcomes"].items():
        if "failure" in saved:
            stage, cause = saved["failure"]
            outcomes[client] = ClientFailure(client, str(stage), str(cause))
            continue
        payload = Params({e: arrays[f"outcome/{client}/{e}"] for e in saved["entries"]})
        outcomes[client] = ClientUpdate(
            client,
            int(saved["round"]),
            payload,
            float(saved["weight"]),
            {k: float(v) for k, v in saved["metrics"].items()},
            {k: float(v) for k, v in saved["extras"].items()},
        )
    events = tuple(
        Event(
            float(e["time"]),
            int(e["order"]),
            _task_from_dict(e["task"]) if e["task"] is not None else None,
            bool(e["completed"]),
            float(e["started"]),
        )
        for e in document["events"]
    )
    return InFlight(float(document["now"]), int(document["next_order"]), events, outcomes, versions)
