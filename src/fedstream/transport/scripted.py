"""A transport whose clients are functions: for tests and experiments of the round loop.

In the manner of httpx's ``MockTransport(handler)``: the behaviour of every client is one
function of what the server sent, so a test states exactly what each client answers (an
honest update, a wrong shape, an exception) without a model, data or torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from fedstream.client.base import FitTask
from fedstream.errors import ClientFailure
from fedstream.params import Params
from fedstream.transport.base import Delivery
from fedstream.types import ClientUpdate, EvaluateResult, FitConfig

FitHandler = Callable[[Params, FitTask], ClientUpdate]
"""A client's answer to a task, given the params as broadcast; raising fails the client."""
EvaluateHandler = Callable[[Params, str, int], EvaluateResult]
"""A client's evaluation of (params, client id, round); raising fails the client."""


class ScriptedTransport:
    """Answers ``fit`` with ``fit_handler`` and ``evaluate`` with ``evaluate_handler``
    (without one, no client evaluates). Every payload goes through the wire format, so byte
    counts are exact and an undecodable answer fails as it would on a real transport. It
    has no secure-sum stages: every exchange request fails."""

    def __init__(
        self, fit_handler: FitHandler, evaluate_handler: EvaluateHandler | None = None
    ) -> None:
        self.fit_handler = fit_handler
        self.evaluate_handler = evaluate_handler

    def fit(self, params: Params, tasks: Sequence[FitTask]) -> Iterator[Delivery[ClientUpdate]]:
        down = params.wire_size()
        for task in tasks:
            try:
                update = self.fit_handler(params, task)
                wire = update.payload.to_bytes()
            except Exception as exc:
                failure = ClientFailure(task.client_id, "train", f"{type(exc).__name__}: {exc}")
                yield Delivery(task.client_id, failure, down, 0)
                continue
            received = ClientUpdate(
                update.client_id, update.round, Params.from_bytes(wire), update.weight,
                update.metrics, update.extras,
            )  # fmt: skip
            yield Delivery(task.client_id, received, down, len(wire))

    def evaluate(
        self,
        params: Params,
        round_number: int,
        client_ids: Sequence[str],
        broadcast: str = "none",
        personalize: FitConfig | None = None,
    ) -> Iterator[Delivery[EvaluateResult]]:
        if self.evaluate_handler is None:
            return
        down = params.wire_size()
        for client_id in client_ids:
            try:
                result = self.evaluate_handler(params, client_id, round_number)
            except Exception as exc:
                failure = ClientFailure(client_id, "evaluate", f"{type(exc).__name__}: {exc}")
                yield Delivery(client_id, failure, down, 0)
                continue
            yield Delivery(client_id, result, down, 0)

    def exchange(
        self, stage: str, round_number: int, requests: Mapping[str, bytes]
    ) -> Iterator[tuple[str, bytes | ClientFailure]]:
        for client_id in requests:
            yield client_id, ClientFailure(client_id, stage, "a scripted client has no stages")
