"""In-process transport: clients are data held in this process, trained by one trainer.

Parameters still go through the wire format both ways (the broadcast encoded once per
round, each update encoded by its client), so simulation exercises the same encoding as
deployment and the byte counts are exact. Each client's durable state (``client.state``:
its compression residual, control variates, local model entries) lives here, as it would
on the device, and a simulation's checkpoint saves it. Byte counts cover parameters only;
the few bytes of metrics and config beside them are not counted here.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from fedstream.client.algorithms import split_extras
from fedstream.client.base import CohortTrainer, FitTask, Trainer, evaluate_client
from fedstream.client.encode import receive_params, upload_mask
from fedstream.client.runtime import (
    Started,
    finish_fit,
    head_fit,
    own_model,
    personal_fit,
    sent_as_trained,
    start_fit,
)
from fedstream.client.state import ClientState, MemoryClientStates
from fedstream.compression.codecs import decode_broadcast
from fedstream.data.base import ClientData, Clients, check_clients, train_sizes_of
from fedstream.data.stream import Stream, data_for
from fedstream.errors import ClientFailure, ConfigError
from fedstream.params import Params
from fedstream.secure.secagg import DerivedRoster, Identity, derived_identity_key
from fedstream.secure.session import SecureDevice
from fedstream.transport.base import Delivery, Fitted, StackedDelivery
from fedstream.types import ClientUpdate, EvaluateResult, FitConfig, UpdateBlock


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` plus the innermost frame, enough to find the cause."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


COHORT_BUDGET_BYTES = 512 * 2**20


def _cohorts(
    tasks: Sequence[FitTask],
    sizes_of: Callable[[Sequence[str]], Sequence[int]],
    row_bytes: int,
    param_bytes: int,
    max_clients: int,
    budget_bytes: int = COHORT_BUDGET_BYTES,
) -> Iterator[list[FitTask]]:
    """Tasks grouped by their fit config (seed aside), since a vectorised cohort must share
    epochs, batch size, lr and μ; a group that fits in one cohort as it is, in task order;
    a larger one sorted by client size, so a cohort pads its clients to similar lengths,
    and cut so a cohort holds at most ``max_clients`` and its estimated memory stays
    within ``budget_bytes``. Each client costs about four copies of the params (weights,
    gradients, the new weights, the delta) plus its data padded to the cohort's largest
    client."""
    groups: dict[tuple[object, ...], list[FitTask]] = {}
    for task in tasks:
        groups.setdefault(task.config.cohort_key(), []).append(task)
    for group in groups.values():
        sizes = sizes_of([t.client_id for t in group])
        if (
            len(group) <= max_clients
            and len(group) * (4 * param_bytes + max(sizes) * row_bytes) <= budget_bytes
        ):  # one cohort: kept in task order, so its block needs no reorder
            yield group
            continue
        cohort: list[FitTask] = []
        widest = 0
        sized = sorted(zip(sizes, group, strict=True), key=lambda pair: pair[0])
        for size, task in sized:
            wider = max(widest, size)
            per_client = 4 * param_bytes + wider * row_bytes
            if cohort and (
                len(cohort) >= max_clients or (len(cohort) + 1) * per_client > budget_bytes
            ):
                yield cohort
                cohort, wider = [], size
            cohort.append(task)
            widest = wider
        if cohort:
            yield cohort


class InProcessTransport:
    """Runs every task in this process. With a ``CohortTrainer`` a round's tasks are trained
    together in cohorts of at most ``cohort_size`` clients and about ``cohort_budget_bytes``
    of memory (see ``_cohorts``).

    Each client's device-side state for the current round (an update held back for secure
    aggregation, its SecAgg+ keys and shares) lives in this object, as it would on the
    device. Dropouts are simulated by wrapping it (``fedstream.transport.faults``).

    ``device_secret`` is the simulated devices' secret (``privacy.mechanisms.device_secret``)
    from which each client seeds its own privacy noise, so a run is reproducible while the
    server, which sees only its own task seeds, cannot redraw the noise. Without it every
    client draws that noise from the OS CSPRNG, as a deployed client does.

    With a ``stream`` a task trains on its client's window at the task's ``data_time``
    (``data.stream``) instead of all its data.
    """

    def __init__(
        self,
        clients: Mapping[str, ClientData],
        trainer: Trainer,
        cohort_size: int = 1024,
        cohort_budget_bytes: int = COHORT_BUDGET_BYTES,
        device_secret: int | None = None,
        stream: Stream | None = None,
    ) -> None:
        if not clients:
            raise ConfigError("clients", {}, "at least one client")
        check_clients(clients)
        self.clients = clients
        self.trainer = trainer
        self.cohort_size = cohort_size
        self.cohort_budget_bytes = cohort_budget_bytes
        self.device_secret = device_secret
        self.stream = stream
        # the simulated PKI: every device's identity key derives from this secret
        self._identity_secret = (
            device_secret if device_secret is not None else int.from_bytes(os.urandom(16))
        )
        example = clients[next(iter(clients))]
        self._row_bytes = example.x_train[:1].nbytes + example.y_train[:1].nbytes
        self._devices: dict[str, SecureDevice] = {}  # made on a client's first exchange
        self.states = MemoryClientStates()  # every client's durable state

    def _device(self, client_id: str) -> SecureDevice:
        device = self._devices.get(client_id)
        if device is None:
            secret = self._identity_secret
            identity = Identity(
                client_id, derived_identity_key(secret, client_id), DerivedRoster(secret)
            )
            device = self._devices[client_id] = SecureDevice(client_id, identity)
        return device

    def _data(self, task: FitTask) -> ClientData:
        return data_for(self.clients, self.stream, task.client_id, task.data_time)

    def _cohort_data(self, cohort: Sequence[FitTask]) -> Sequence[ClientData]:
        """The cohort's clients' data, in task order: from pooled clients a
        ``PooledCohort``, read straight into the trainer's padded arrays; one
        ``ClientData`` a client otherwise (a stream's windows, a plain mapping)."""
        if self.stream is None and isinstance(self.clients, Clients):
            return self.clients.cohort([t.client_id for t in cohort])
        return [self._data(t) for t in cohort]

    def _start(self, model: Params, extras: dict[str, Params], task: FitTask) -> Started:
        """The task as its client runs it (``client.runtime.start_fit``)."""
        return start_fit(model, extras, task, self.states.of(task.client_id), self.device_secret)

    def _upload(
        self,
        update: ClientUpdate,
        started: Started,
        trained: ClientState,
        bytes_down: int,
        mask: npt.NDArray[np.bool_] | None = None,
    ) -> Delivery[ClientUpdate]:
        """Finish the update as its client would (``finish_fit``, from its state after
        training, ``trained``) and hand the server what the wire format would deliver
        (``Params.received``), counting the bytes the encoding would take. Under secure
        aggregation the client keeps the update and answers with its metrics only."""
        config = started.task.config
        before = self.states.of(update.client_id)
        sent, state = finish_fit(update, started, trained, mask)
        if state is not before:
            self.states.put(update.client_id, state)
        if config.secure_aggregation:
            self._device(update.client_id).hold(sent)
            sent = replace(sent, payload=Params({}), weight=0.0, extras={})
        received = ClientUpdate(
            sent.client_id, sent.round, sent.payload.received(), sent.weight, sent.metrics,
            sent.extras,
        )  # fmt: skip
        return Delivery(update.client_id, received, bytes_down, sent.payload.wire_size())

    def client_states(self) -> dict[str, ClientState]:
        """Every client's durable state now, for a checkpoint."""
        return self.states.snapshot()

    def restore_client_states(self, states: Mapping[str, ClientState]) -> None:
        """Put back the clients' states a checkpoint saved (those of this transport's
        clients; a worker holds only its share)."""
        self.states.restore({c: s for c, s in states.items() if c in self.clients})

    def exchange(
        self, stage: str, round_number: int, requests: Mapping[str, bytes]
    ) -> Iterator[tuple[str, bytes | ClientFailure]]:
        """Answer one SecAgg+ stage for each client asked, from its device-side state."""
        for client_id, request in requests.items():
            try:
                yield client_id, self._device(client_id).answer(stage, round_number, request)
            except Exception as exc:
                yield client_id, ClientFailure(client_id, stage, describe_exception(exc))

    def fit(self, params: Params, tasks: Sequence[FitTask]) -> Iterator[Delivery[ClientUpdate]]:
        for fitted in self._fit(params, tasks, stacked=False):
            assert isinstance(fitted, Delivery)
            yield fitted

    def fit_stacked(self, params: Params, tasks: Sequence[FitTask]) -> Iterator[Fitted]:
        """``fit``, with each cohort whose clients send their updates as trained
        (``client.runtime.sent_as_trained``) handed over as one block."""
        return self._fit(params, tasks, stacked=True)

    def _fit(self, params: Params, tasks: Sequence[FitTask], stacked: bool) -> Iterator[Fitted]:
        if not tasks:
            return
        wire = params.to_bytes()
        down = len(wire)
        received = receive_params(Params.from_bytes(wire), tasks[0].config)
        mask = upload_mask(received, tasks[0].config)
        model, extras = split_extras(received)
        if isinstance(self.trainer, CohortTrainer) and len(tasks) > 1:
            cohorts = _cohorts(
                tasks,
                lambda client_ids: train_sizes_of(self.clients, client_ids),
                self._row_bytes,
                params.nbytes,
                self.cohort_size,
                self.cohort_budget_bytes,
            )
            for cohort in cohorts:
                try:
                    datasets = self._cohort_data(cohort)
                    if stacked and self._as_trained(cohort):
                        yield self._stacked(self.trainer.fit_cohort(model, cohort, datasets), down)
                        continue
                    started = [self._start(model, extras, t) for t in cohort]
                    started = head_fit(self.trainer, datasets, started)
                    starts = [s.start for s in started]
                    own_starts = any(s is not model for s in starts)
                    block = self.trainer.fit_cohort(
                        model, [s.task for s in started], datasets, starts if own_starts else None
                    )
                    states = [self.states.of(t.client_id) for t in cohort]
                    trained = personal_fit(self.trainer, datasets, started, states)
                except Exception as exc:  # the whole cohort failed together
                    cause = describe_exception(exc)
                    for task in cohort:
                        yield Delivery(
                            task.client_id, ClientFailure(task.client_id, "train", cause), down, 0
                        )
                    continue
                for one, update, state in zip(started, block.rows(), trained, strict=True):
                    yield self._finish(update, one, state, down, mask)
            return
        for task in tasks:
            try:
                data = self._data(task)
                (one,) = head_fit(self.trainer, [data], [self._start(model, extras, task)])
                update = self.trainer.fit(one.start, one.task, data)
                (state,) = personal_fit(
                    self.trainer, [data], [one], [self.states.of(task.client_id)]
                )
            except Exception as exc:
                failure = ClientFailure(task.client_id, "train", describe_exception(exc))
                yield Delivery(task.client_id, failure, down, 0)
                continue
            yield self._finish(update, one, state, down, mask)

    def _as_trained(self, cohort: Sequence[FitTask]) -> bool:
        """Whether the cohort's clients train from the model as sent and send their updates
        as trained (``sent_as_trained``), with no state of their own: then ``start_fit``
        and ``finish_fit`` change nothing, and the cohort can skip both."""
        return sent_as_trained(cohort[0].config) and not any(
            self.states.of(t.client_id) for t in cohort
        )

    @staticmethod
    def _stacked(block: UpdateBlock, bytes_down: int) -> StackedDelivery:
        """A cohort's updates, sent as trained (``sent_as_trained``), as the server receives
        them: one copy of the stacked arrays (``Params.received``), each row counted at the
        bytes its own encoding would take."""
        first = Params({n: a[0] for n, a in block.payload.items()})
        received = replace(block, payload=block.payload.received())
        return StackedDelivery(received, bytes_down, first.wire_size())

    def _finish(
        self,
        update: ClientUpdate,
        started: Started,
        trained: ClientState,
        bytes_down: int,
        mask: npt.NDArray[np.bool_] | None,
    ) -> Delivery[ClientUpdate]:
        """``_upload``, with a failure to encode recorded as the client's failure."""
        task = started.task
        try:
            return self._upload(update, started, trained, bytes_down, mask)
        except Exception as exc:
            failure = ClientFailure(task.client_id, "train", describe_exception(exc))
            return Delivery(task.client_id, failure, bytes_down, 0)

    def evaluate(
        self,
        params: Params,
        round_number: int,
        client_ids: Sequence[str],
        broadcast: str = "none",
        personalize: FitConfig | None = None,
    ) -> Iterator[Delivery[EvaluateResult]]:
        wire = params.to_bytes()
        received = decode_broadcast(Params.from_bytes(wire), broadcast)
        for client_id in client_ids:
            own = own_model(received, self.states.of(client_id))
            try:
                result = evaluate_client(
                    self.trainer, received, client_id, round_number, self.clients[client_id],
                    personalize, own,
                )  # fmt: skip
            except Exception as exc:
                failure = ClientFailure(client_id, "evaluate", describe_exception(exc))
                yield Delivery(client_id, failure, len(wire), 0)
                continue
            yield Delivery(client_id, result, len(wire), 0)
