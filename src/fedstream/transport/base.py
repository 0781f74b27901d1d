"""The transport interface: deliver tasks to clients and bring their answers back."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from fedstream.client.base import FitTask
from fedstream.errors import ClientFailure
from fedstream.params import Params
from fedstream.types import ClientUpdate, EvaluateResult, FitConfig

ResultT = TypeVar("ResultT", ClientUpdate, EvaluateResult)


@dataclass(frozen=True)
class Delivery(Generic[ResultT]):
    """One client's answer (or failure) with the bytes that crossed the wire each way."""

    client_id: str
    result: ResultT | ClientFailure
    bytes_down: int
    bytes_up: int


class Transport(Protocol):
    """How the round loop reaches clients. Implementations: in-process (simulation), gRPC.

    Both calls stream deliveries back as they arrive; a client that fails yields a
    ``ClientFailure`` rather than raising, so one client never stops a round.
    """

    def fit(self, params: Params, tasks: Sequence[FitTask]) -> Iterator[Delivery[ClientUpdate]]: ...

    def evaluate(
        self,
        params: Params,
        round_number: int,
        client_ids: Sequence[str],
        broadcast: str = "none",
        personalize: FitConfig | None = None,
    ) -> Iterator[Delivery[EvaluateResult]]:
        """Each client's evaluation of ``params`` (encoded with the ``broadcast`` codec); with
        ``personalize``, also of the model it adapts to its own data (``evaluate_client``)."""
        ...

    def exchange(
        self, stage: str, round_number: int, requests: Mapping[str, bytes]
    ) -> Iterator[tuple[str, bytes | ClientFailure]]:
        """One stage of a multi-step protocol (secure aggregation): each client's answer to
        its request, or its failure."""
        ...


class TransportWrapper:
    """A transport around ``inner`` that changes only what it overrides (fault injection,
    simulated attackers): by default every call goes to ``inner`` unchanged."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def fit(self, params: Params, tasks: Sequence[FitTask]) -> Iterator[Delivery[ClientUpdate]]:
        return self.inner.fit(params, tasks)

    def evaluate(
        self,
        params: Params,
        round_number: int,
        client_ids: Sequence[str],
        broadcast: str = "none",
        personalize: FitConfig | None = None,
    ) -> Iterator[Delivery[EvaluateResult]]:
        return self.inner.evaluate(params, round_number, client_ids, broadcast, personalize)

    def exchange(
        self, stage: str, round_number: int, requests: Mapping[str, bytes]
    ) -> Iterator[tuple[str, bytes | ClientFailure]]:
        return self.inner.exchange(stage, round_number, requests)
