"""Fault injection as a wrapper transport: simulated dropouts for tests and experiments.

The real transports carry no fault switches; a test that needs a client to vanish wraps
the transport it runs on, whatever that is (in-process, worker processes, Ray, gRPC).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from fedstream.client.base import FitTask
from fedstream.errors import ClientFailure, ConfigError
from fedstream.params import Params
from fedstream.secure.session import STAGES
from fedstream.transport.base import Delivery, Transport, TransportWrapper
from fedstream.types import ClientUpdate

DROPOUT_STAGES = ("fit", *STAGES)
"""Where a client can drop out, in the order a round reaches them: training, then each
secure-sum stage."""


class Dropouts(TransportWrapper):
    """``inner``, except that each client in ``offline`` stops answering from its stage on
    (``"fit"``, or a secure-sum stage such as ``"mask"``): it is not sent that request or
    any later one of a fit, and its failure says it dropped. Evaluation is unaffected."""

    def __init__(self, inner: Transport, offline: Mapping[str, str]) -> None:
        for client_id, stage in offline.items():
            if stage not in DROPOUT_STAGES:
                raise ConfigError(f"offline[{client_id!r}]", stage, f"one of {DROPOUT_STAGES}")
        super().__init__(inner)
        self.offline = dict(offline)

    def _is_offline(self, client_id: str, stage: str) -> bool:
        since = self.offline.get(client_id)
        return since is not None and DROPOUT_STAGES.index(since) <= DROPOUT_STAGES.index(stage)

    def fit(self, params: Params, tasks: Sequence[FitTask]) -> Iterator[Delivery[ClientUpdate]]:
        for task in tasks:
            if self._is_offline(task.client_id, "fit"):
                failure = ClientFailure(task.client_id, "train", "offline (simulated dropout)")
                yield Delivery(task.client_id, failure, params.wire_size(), 0)
        live = [t for t in tasks if not self._is_offline(t.client_id, "fit")]
        yield from self.inner.fit(params, live)

    def exchange(
        self, stage: str, round_number: int, requests: Mapping[str, bytes]
    ) -> Iterator[tuple[str, bytes | ClientFailure]]:
        for client_id in requests:
            if self._is_offline(client_id, stage):
                yield client_id, ClientFailure(client_id, stage, "offline (simulated dropout)")
        live = {c: r for c, r in requests.items() if not self._is_offline(c, stage)}
        yield from self.inner.exchange(stage, round_number, live)
