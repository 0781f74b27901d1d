"""What every transport does on the client around one training task, in one place.

The in-process transport (and each worker process or Ray actor) and the gRPC client all
call these, so a simulated client sends exactly what a deployed one sends:

1. :func:`start_fit`: split what the server sent into the model and its extras
   (``client.algorithms``), put the client's own local entries in (``client.local``),
   and give the task the client algorithm's gradient correction;
2. :func:`head_fit` trains FedRep's personal head first; the trainer trains, and
   :func:`personal_fit` trains Ditto's personal model;
3. :func:`finish_fit`: keep the local entries, finish the client algorithm (SCAFFOLD's
   control variate, FedNova's normalisation, FedDyn's gradient), then clip, noise and
   compress for the wire (``client.encode``).

Each takes the client's state and returns its next one (``client.state``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from fedstream.client.algorithms import (
    CONTROL,
    PERSONAL_MODEL,
    STEPS,
    ditto_task,
    feddyn_correction,
    feddyn_finish,
    fednova_finish,
    fedrep_head_task,
    scaffold_correction,
    scaffold_finish,
)
from fedstream.client.base import CohortTrainer, FitTask, Trainer
from fedstream.client.encode import prepare_upload, upload_codec
from fedstream.client.local import LOCAL, keep_local, shared_part, start_params
from fedstream.client.state import ClientState
from fedstream.data.base import ClientData
from fedstream.errors import ConfigError
from fedstream.params import Params
from fedstream.privacy.mechanisms import device_noise_seed
from fedstream.types import ClientUpdate, FitConfig


@dataclass(frozen=True)
class Started:
    """A task as the client runs it: the model it trains from, the task with its gradient
    correction, and what the server sent beside the model."""

    start: Params
    task: FitTask
    extras: Mapping[str, Params]


def start_fit(
    model: Params,
    extras: Mapping[str, Params],
    task: FitTask,
    state: ClientState,
    device_secret: int | None = None,
) -> Started:
    """Step 1 of the module docstring, given what the server sent split into the model and
    its extras (``client.algorithms.split_extras``, once for all of a call's tasks).

    ``device_secret`` is a simulated device's secret: its privacy noise is then seeded from
    it (reproducible), else drawn from the OS CSPRNG (``FitTask.noise_seed``)."""
    config = task.config
    if device_secret is not None and seeded_noise(config):
        task = replace(
            task, noise_seed=device_noise_seed(device_secret, task.client_id, task.round)
        )
    start = start_params(model, state, config.local_entries) if state else model
    if config.algorithm == "sgd":
        return Started(start, task, extras)
    extras = dict(extras)
    if config.algorithm == "scaffold":
        if CONTROL not in extras:
            raise ConfigError("broadcast", sorted(extras), "the server's control variate @c")
        control = shared_part(extras[CONTROL], task.config.local_entries)
        extras = {**extras, CONTROL: control}
        task = replace(task, correction=scaffold_correction(control, state))
    if config.algorithm == "feddyn":
        task = replace(task, correction=feddyn_correction(state))
    if config.algorithm == "fedrep":
        task = replace(task, frozen=config.local_entries)
    return Started(start, task, extras)


def head_fit(
    trainer: Trainer, datasets: Sequence[ClientData], started: Sequence[Started]
) -> list[Started]:
    """FedRep's first pass (``client.algorithms``), before the round's training: each
    client's personal head trained over the frozen body, its task then starting from it;
    the clients of one cohort together when the trainer trains cohorts. Any other
    algorithm leaves ``started`` as it is."""
    if not started or started[0].task.config.algorithm != "fedrep":
        return list(started)
    starts = [s.start for s in started]
    tasks = [fedrep_head_task(s.start, s.task) for s in started]
    heads = fit_all(trainer, starts, tasks, datasets)
    return [
        replace(s, start=with_head(s.start, h.payload, s.task.frozen))
        for s, h in zip(started, heads, strict=True)
    ]


def fit_all(
    trainer: Trainer,
    starts: Sequence[Params],
    tasks: Sequence[FitTask],
    datasets: Sequence[ClientData],
) -> list[ClientUpdate]:
    """Each task trained from its own start: as one cohort when the trainer trains
    cohorts, else one at a time."""
    if isinstance(trainer, CohortTrainer) and len(tasks) > 1:
        return trainer.fit_cohort(starts[0], tasks, datasets, starts).rows()
    return [trainer.fit(*one) for one in zip(starts, tasks, datasets, strict=True)]


def with_head(start: Params, delta: Params, head: Sequence[str]) -> Params:
    """``start`` with its ``head`` entries moved by ``delta``."""
    chosen = set(head)
    return Params({n: a + delta[n] if n in chosen else a for n, a in start.items()})


def personal_fit(
    trainer: Trainer,
    datasets: Sequence[ClientData],
    started: Sequence[Started],
    states: Sequence[ClientState],
) -> list[ClientState]:
    """Ditto's second pass (``client.algorithms``), after the global one: each client's
    personal model trained towards the model the server sent, kept in its next state; the
    clients of one cohort together when the trainer trains cohorts. Any other algorithm
    leaves the states as they are."""
    if not started or started[0].task.config.algorithm != "ditto":
        return list(states)
    passes = [ditto_task(s.start, s.task, state) for s, state in zip(started, states, strict=True)]
    starts = [start for start, _ in passes]
    updates = fit_all(trainer, starts, [task for _, task in passes], datasets)
    return [
        {**state, PERSONAL_MODEL: start + update.payload}
        for state, start, update in zip(states, starts, updates, strict=True)
    ]


def personal_model(state: ClientState) -> Params | None:
    """The client's own model, evaluated beside the global one: Ditto's v_i (``None``
    for a client without one)."""
    return state.get(PERSONAL_MODEL)


def model_in_use(received: Params, state: ClientState) -> Params:
    """The model this client answers with: its own whole model when it keeps one
    (Ditto's v_i), else ``received`` with its own local entries in (FedPer's and FedRep's
    head, FedBN's batch norm)."""
    own = personal_model(state)
    return own if own is not None else start_params(received, state)


def own_model(received: Params, state: ClientState) -> Params | None:
    """The model this client uses when it is not the global one (``model_in_use``), to
    evaluate beside it; ``None`` for a client that keeps no weights of its own (integer
    counters such as BatchNorm's step count do not change what a model answers)."""
    local = state.get(LOCAL, Params({}))
    keeps = any(np.issubdtype(a.dtype, np.floating) for a in local.values())
    return model_in_use(received, state) if keeps or PERSONAL_MODEL in state else None


def seeded_noise(config: FitConfig) -> bool:
    """Whether the task draws privacy noise on the client that a device secret may seed:
    local DP or DP-SGD, unless the server asked for the CSPRNG."""
    privacy, sample = config.privacy, config.sample_dp
    if privacy is not None and privacy.noise_multiplier > 0:
        return not privacy.secure_noise
    return sample is not None and not sample.secure_noise


def sent_as_trained(config: FitConfig) -> bool:
    """Whether :func:`finish_fit` sends a client's update exactly as it was trained and
    leaves its state alone, for every client of a task with ``config``: no local entries,
    client algorithm, sample-level or local DP, compression, upload mask or secure sum, and
    metrics in the clear. A cohort of such tasks can travel as one ``UpdateBlock``."""
    return (
        config.algorithm == "sgd"
        and not config.local_entries
        and config.sample_dp is None
        and config.privacy is None
        and upload_codec(config) is None
        and not config.secure_aggregation
        and config.client_metrics == "clear"
    )


def finish_fit(
    update: ClientUpdate,
    started: Started,
    state: ClientState,
    mask: npt.NDArray[np.bool_] | None = None,
) -> tuple[ClientUpdate, ClientState]:
    """Step 3 of the module docstring: what to send, and the client's next state."""
    config = started.task.config
    if config.local_entries:
        update, state = keep_local(update, started.start, config.local_entries, state)
    if config.algorithm != "sgd":
        steps = int(update.metrics.get(STEPS, 0))
        metrics = {k: v for k, v in update.metrics.items() if k != STEPS}
        update = replace(update, metrics=metrics)
        if config.algorithm == "scaffold":
            payload, state = scaffold_finish(
                update.payload, started.extras[CONTROL], state, steps, config.lr
            )
            update = replace(update, payload=payload)
        elif config.algorithm == "feddyn":
            state = feddyn_finish(update.payload, state, config.proximal_mu)
        elif config.algorithm == "fednova":
            update = fednova_finish(update, steps, config.lr, config.proximal_mu)
    return prepare_upload(update, config, state, mask, started.task.noise_seed)
