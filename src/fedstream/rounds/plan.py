"""Phase 1, plan: who takes part in the round and what each is asked to do."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from fedstream.client.base import FitTask
from fedstream.client.local import local_names
from fedstream.errors import ClientFailure, ConfigError
from fedstream.rounds.config import RoundConfig
from fedstream.strategies.base import Strategy
from fedstream.types import FitConfig, ServerState

TaskPolicy = Callable[
    [Sequence[FitTask], np.random.Generator], tuple[list[FitTask], list[ClientFailure]]
]
"""Changes a round's tasks before they are sent, drawing from the round's generator: the
tasks it keeps (possibly changed) and a failure for each client it drops. A simulation uses
one for systems heterogeneity (``fedstream.simulation.stragglers``)."""


@dataclass(frozen=True)
class RoundPlan:
    """Round ``round``'s sampled clients, the task each is sent (in the order the round
    aggregates them), the strategy's task config, and the clients dropped before training."""

    round: int
    sampled: tuple[str, ...]
    tasks: tuple[FitTask, ...]
    fit: FitConfig
    failures: tuple[ClientFailure, ...] = ()


def sample_size(num_clients: int, clients_per_round: int | float, min_clients: int) -> int:
    """How many clients a round asks: the count or ⌈fraction·N⌉, at least ``min_clients``,
    and never more than exist (asking for more is an error, not silently fewer)."""
    wanted = (
        math.ceil(clients_per_round * num_clients)
        if isinstance(clients_per_round, float)
        else clients_per_round
    )
    if wanted > num_clients:
        raise ConfigError(
            "clients_per_round", clients_per_round, f"at most the number of clients ({num_clients})"
        )
    if min_clients > num_clients:
        raise ConfigError(
            "min_clients", min_clients, f"at most the number of clients ({num_clients})"
        )
    return max(wanted, min_clients)


def sample_clients(
    rng: np.random.Generator, client_ids: Sequence[str], count: int
) -> tuple[str, ...]:
    """``count`` distinct clients drawn uniformly without replacement."""
    chosen = rng.choice(len(client_ids), size=count, replace=False)
    return tuple([client_ids[i] for i in chosen.tolist()])


def poisson_sample(
    rng: np.random.Generator, client_ids: Sequence[str], rate: float
) -> tuple[str, ...]:
    """Each client independently with probability ``rate``, in ``client_ids`` order: one
    uniform draw per client, so the size varies (and may be 0)."""
    joined = np.flatnonzero(rng.random(len(client_ids)) < rate)
    return tuple([client_ids[i] for i in joined.tolist()])


def plan_round(
    state: ServerState,
    strategy: Strategy,
    client_ids: Sequence[str],
    config: RoundConfig,
    rng: np.random.Generator,
    task_policy: TaskPolicy | None = None,
) -> RoundPlan:
    """Sample the round's clients (``config.sampling``) and give each its task: the
    strategy's config with a seed of its own for the client's shuffling. Draws, in this
    order, the sample, the seeds, then whatever ``task_policy`` draws."""
    round_number = state.round + 1
    count = sample_size(len(client_ids), config.clients_per_round, config.min_clients)
    sampled = (
        poisson_sample(rng, client_ids, count / len(client_ids))
        if config.sampling == "poisson"
        else sample_clients(rng, client_ids, count)
    )
    seeds = rng.integers(0, 2**63 - 1, size=len(sampled))
    local = local_names(state.params, config.local_entries)
    fit = strategy.configure_fit(state, replace(config.fit_config(), local_entries=local))
    tasks = [
        FitTask.planned(client_id, round_number, fit.with_seed(seed))
        for client_id, seed in zip(sampled, seeds.tolist(), strict=True)
    ]
    failures: list[ClientFailure] = []
    if task_policy is not None:
        tasks, failures = task_policy(tasks, rng)
    return RoundPlan(round_number, sampled, tuple(tasks), fit, tuple(failures))
