"""The transport interface: deliver tasks to clients and bring their answers back."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, runtime_checkable

from fedstream.client.base import FitTask
from fedstream.errors import ClientFailure
from fedstream.params import Params
from fedstream.types import ClientUpdate, EvaluateResult, FitConfig, UpdateBlock

ResultT = TypeVar("ResultT", ClientUpdate, EvaluateResult)


@dataclass(frozen=True)
class Delivery(Generic[ResultT]):
    """One client's answer (or failure) with the bytes that crossed the wire each way."""

    client_id: str
    result: ResultT | ClientFailure
    bytes_down: int
    bytes_up: int


@dataclass(frozen=True)
class StackedDelivery:
    """A cohort's answers as one ``UpdateBlock``, with the bytes that crossed the wire
    each way for each of its clients (equal for all: one broadcast, one layout)."""

    block: UpdateBlock
    bytes_down_each: int
    bytes_up_each: int

    def split(self) -> list[Delivery[ClientUpdate]]:
        """The block's rows as one delivery each, in its order."""
        return [
            Delivery(u.client_id, u, self.bytes_down_each, self.bytes_up_each)
            for u in self.block.rows()
        ]


Fitted = Delivery[ClientUpdate] | StackedDelivery
"""What a stacked fit call yields: one client's answer, or a cohort's block of them."""


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


@runtime_checkable
class StackedFit(Protocol):
    """A transport that can hand a cohort's plain updates over as one block
    (``InProcessTransport``): the synchronous round loop asks it through ``fit_stacked``,
    so the server checks and sums the cohort in a few array operations. Its ``fit`` gives
    the same answers one delivery per client, which every other caller and every wrapper
    sees."""

    def fit_stacked(self, params: Params, tasks: Sequence[FitTask]) -> Iterator[Fitted]: ...


def fit_deliveries(
    transport: Transport, params: Params, tasks: Sequence[FitTask]
) -> Iterator[Fitted]:
    """The answers to ``tasks``: stacked where ``transport`` can stack them. A subclass
    that overrides ``fit`` alone (to watch or change what clients send) is asked through
    its ``fit``, so it sees every answer."""
    if isinstance(transport, StackedFit):
        kind = type(transport)
        if issubclass(_defined_in(kind, "fit_stacked"), _defined_in(kind, "fit")):
            return transport.fit_stacked(params, tasks)
    return transport.fit(params, tasks)


def _defined_in(kind: type, name: str) -> type:
    """The class of ``kind``'s MRO whose own body defines ``name``."""
    return next(c for c in kind.__mro__ if name in vars(c))


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
