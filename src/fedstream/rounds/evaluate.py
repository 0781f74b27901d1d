"""Phase 6, evaluate: the new global model on the clients' test splits and centrally."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedstream.errors import ClientFailure
from fedstream.params import Params
from fedstream.rounds.broadcast import broadcast_params
from fedstream.rounds.config import RoundConfig
from fedstream.rounds.plan import sample_clients
from fedstream.transport.base import Transport
from fedstream.types import METRIC_PREFIX, FitConfig, WeightedSum

CentralEvaluate = Callable[[Params], Mapping[str, float]]
"""Metrics of the global params on data no client holds (the server's held-out set)."""


@dataclass(frozen=True)
class Evaluation:
    """What one evaluation phase measured: metrics (``fed_*`` weighted by examples,
    ``central_*``), each evaluating client's own metrics, failures, and the bytes each way."""

    metrics: Mapping[str, float]
    per_client: Mapping[str, Mapping[str, float]]
    failures: tuple[ClientFailure, ...]
    bytes_down: int
    bytes_up: int


NO_EVALUATION = Evaluation({}, {}, (), 0, 0)


def weighted_mean(
    pairs: Sequence[tuple[float, Mapping[str, float]]], prefix: str
) -> dict[str, float]:
    """Weighted mean of each metric over (weight, metrics) pairs, keys prefixed."""
    totals: dict[str, float] = {}
    weights: dict[str, float] = {}
    for weight, metrics in pairs:
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + weight * value
            weights[key] = weights.get(key, 0.0) + weight
    return {f"{prefix}{k}": totals[k] / weights[k] for k in totals if weights[k] > 0}


def summed_metrics(aggregate: WeightedSum, prefix: str) -> dict[str, float]:
    """The mean of each metric the clients sent inside the sum (``metric:<name>`` extras
    of weight × value), over the sum of weights; keys prefixed."""
    if aggregate.weight <= 0:
        return {}
    return {
        f"{prefix}{key.removeprefix(METRIC_PREFIX)}": value / aggregate.weight
        for key, value in aggregate.extras.items()
        if key.startswith(METRIC_PREFIX)
    }


def evaluate_federated(
    params: Params,
    transport: Transport,
    client_ids: Sequence[str],
    config: RoundConfig,
    round_number: int,
    rng: np.random.Generator,
) -> Evaluation:
    """``evaluate_fraction`` of all clients (drawn from ``rng`` unless all) evaluate
    ``params`` as the broadcast codec delivers them (none when the clients' metrics may
    not travel in the clear, ``RoundConfig.client_metrics``); with ``personalize_epochs`` each also
    reports the model it adapts to its own data."""
    if config.evaluate_fraction <= 0 or config.client_metrics != "clear":
        return NO_EVALUATION
    evaluators = (
        list(client_ids)
        if config.evaluate_fraction == 1.0
        else list(
            sample_clients(rng, client_ids, math.ceil(config.evaluate_fraction * len(client_ids)))
        )
    )
    shown = broadcast_params(params, config.broadcast, rng)
    personalize = (
        FitConfig(config.personalize_epochs, config.batch_size, config.lr, seed=round_number)
        if config.personalize_epochs > 0
        else None
    )
    evaluations: list[tuple[float, Mapping[str, float]]] = []
    per_client: dict[str, Mapping[str, float]] = {}
    failures: list[ClientFailure] = []
    bytes_down = bytes_up = 0
    for answer in transport.evaluate(
        shown, round_number, evaluators, config.broadcast, personalize
    ):
        bytes_down += answer.bytes_down
        bytes_up += answer.bytes_up
        if isinstance(answer.result, ClientFailure):
            failures.append(answer.result)
        else:
            evaluations.append((answer.result.num_examples, answer.result.metrics))
            per_client[answer.client_id] = answer.result.metrics
    return Evaluation(
        weighted_mean(with_global_as_personal(evaluations), "fed_"),
        per_client,
        tuple(failures),
        bytes_down,
        bytes_up,
    )


def with_global_as_personal(
    pairs: Sequence[tuple[float, Mapping[str, float]]],
) -> list[tuple[float, Mapping[str, float]]]:
    """When some clients report a model of their own (``personal_*``), a client without one
    uses the global model: its global metrics stand in for its personal ones, so
    ``fed_personal_*`` is a mean over the same clients as ``fed_*``."""
    names = {k for _, metrics in pairs for k in metrics if k.startswith(PERSONAL)}
    if not names:
        return list(pairs)
    return [
        (
            weight,
            {
                **{
                    name: metrics[name.removeprefix(PERSONAL)]
                    for name in names
                    if name.removeprefix(PERSONAL) in metrics
                },
                **metrics,
            },
        )
        for weight, metrics in pairs
    ]


PERSONAL = "personal_"
"""The prefix of the metrics of the model a client uses itself (``evaluate_client``)."""


def evaluate_model(
    params: Params,
    transport: Transport,
    client_ids: Sequence[str],
    config: RoundConfig,
    round_number: int,
    rng: np.random.Generator,
    central_evaluate: CentralEvaluate | None,
) -> Evaluation:
    """Federated evaluation, then the central one on the server's held-out set."""
    federated = evaluate_federated(params, transport, client_ids, config, round_number, rng)
    if central_evaluate is None:
        return federated
    central = {f"central_{k}": v for k, v in central_evaluate(params).items()}
    return Evaluation(
        {**federated.metrics, **central},
        federated.per_client,
        federated.failures,
        federated.bytes_down,
        federated.bytes_up,
    )
