"""Torch-free clients for the round-loop tests: each answers with a known update."""

from __future__ import annotations

import numpy as np

from fedstream import ClientUpdate, EvaluateResult, Params
from fedstream.client.base import FitTask
from fedstream.transport import ScriptedTransport

GLOBAL = Params({"w": np.array([1.0, 2.0], np.float32), "b": np.array([0.5], np.float32)})
CLIENTS = [f"c{i}" for i in range(6)]


def delta_of(client_id: str) -> Params:
    """Client k's update: every entry k + 1."""
    k = int(client_id[1:])
    return GLOBAL.map(lambda a: np.full_like(a, k + 1))


def weight_of(client_id: str) -> float:
    return float(int(client_id[1:]) + 1)


def honest(params: Params, task: FitTask) -> ClientUpdate:
    return ClientUpdate(
        task.client_id,
        task.round,
        delta_of(task.client_id),
        weight_of(task.client_id),
        {"loss": float(int(task.client_id[1:]))},
    )


def evaluate(params: Params, client_id: str, round_number: int) -> EvaluateResult:
    return EvaluateResult(client_id, round_number, 10, {"w0": float(params["w"][0])})


def transport(**faults: object) -> ScriptedTransport:
    """Honest clients, except those named in ``faults`` (client id → a function that
    changes the update, or an exception to raise)."""

    def fit(params: Params, task: FitTask) -> ClientUpdate:
        fault = faults.get(task.client_id)
        if isinstance(fault, Exception):
            raise fault
        update = honest(params, task)
        return fault(update) if callable(fault) else update

    return ScriptedTransport(fit, evaluate)
