"""Simulated attackers, for experiments on robust aggregation: a share of the clients,
drawn from the run's seed, replace their honest update before it is sent.

- ``sign_flip``: −scale × the honest update;
- ``scale``: scale × the honest update (model replacement when scale ≈ clients a round);
- ``gaussian``: noise N(0, noise_std²) in every entry, in place of the update;
- ``alie`` ("a little is enough", Baruch et al. 2019): every attacker sends the honest
  updates' coordinate mean − z·std, z from the number of clients and attackers;
- ``ipm`` (inner-product manipulation, Xie et al. 2020): −ε × the honest updates' mean.

The last two collude: the attackers see the honest updates of the round, as those attacks
assume. Each attacker keeps its declared weight (a rule that counts clients once ignores
it anyway). The attackers are wrapped around the run's transport, so they work with the
in-process clients, worker processes and Ray; the updates they rewrite are the dense ones,
so a codec or a secure sum (which hides them) is a configuration error.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from statistics import NormalDist

import numpy as np

from fedstream.client.base import FitTask
from fedstream.errors import ClientFailure
from fedstream.params import Params
from fedstream.transport.base import Delivery, Transport
from fedstream.types import ClientUpdate, EvaluateResult, FitConfig

ATTACKS = ("none", "sign_flip", "scale", "gaussian", "alie", "ipm")
ATTACK_STREAM = 0x41545441  # separates the attackers' draw from every other use of the seed


def choose_attackers(client_ids: Sequence[str], fraction: float, seed: int) -> tuple[str, ...]:
    """round(fraction × N) of the clients, drawn without replacement from ``seed``; sorted."""
    count = round(fraction * len(client_ids))
    rng = np.random.default_rng([seed, ATTACK_STREAM])
    chosen = rng.choice(len(client_ids), size=count, replace=False)
    return tuple(sorted(client_ids[i] for i in chosen))


def alie_z(clients: int, attackers: int) -> float:
    """Baruch et al.'s z_max: with s = ⌊n/2 + 1⌋ − f clients the attackers need on their
    side, the largest z for which (n − s)/n of honest values lie above mean − z·std."""
    supporters = math.floor(clients / 2 + 1) - attackers
    share = (clients - supporters) / clients
    return NormalDist().inv_cdf(min(max(share, 1e-6), 1 - 1e-6))


def attacked_payload(
    kind: str,
    own: Params,
    honest: Sequence[Params],
    scale: float,
    noise_std: float,
    z: float,
    ipm_epsilon: float,
    rng: np.random.Generator,
) -> Params:
    """What an attacker sends in place of its honest update ``own``; ``honest`` are the
    round's honest updates (for the colluding attacks)."""
    if kind == "sign_flip":
        return own.map(lambda a: (-scale * a.astype(np.float64)).astype(a.dtype))
    if kind == "scale":
        return own.map(lambda a: (scale * a.astype(np.float64)).astype(a.dtype))
    if kind == "gaussian":
        return own.map(lambda a: rng.normal(0.0, noise_std, a.shape).astype(a.dtype))
    reference = honest if honest else [own]
    stacked = np.stack([p.flat() for p in reference])
    mean = stacked.mean(axis=0)
    flat = mean - z * stacked.std(axis=0) if kind == "alie" else -ipm_epsilon * mean
    return Params.from_flat(flat, own)


class Attacks:
    """``inner``, with the updates of ``attackers`` rewritten by ``kind``: the honest
    updates of a fit are passed on as they come, and the attackers' after them, once the
    colluding attacks have seen the rest. Evaluation and secure-sum stages pass through."""

    def __init__(
        self,
        inner: Transport,
        attackers: Sequence[str],
        kind: str,
        scale: float,
        noise_std: float,
        z: float,
        ipm_epsilon: float,
        seed: int,
    ) -> None:
        self.inner = inner
        self.attackers = frozenset(attackers)
        self.kind = kind
        self.scale, self.noise_std, self.z, self.ipm_epsilon = scale, noise_std, z, ipm_epsilon
        self.seed = seed

    def fit(self, params: Params, tasks: Sequence[FitTask]) -> Iterator[Delivery[ClientUpdate]]:
        held: list[tuple[Delivery[ClientUpdate], ClientUpdate]] = []
        honest: list[Params] = []
        for delivery in self.inner.fit(params, tasks):
            result = delivery.result
            if isinstance(result, ClientUpdate) and delivery.client_id in self.attackers:
                held.append((delivery, result))
                continue
            if isinstance(result, ClientUpdate):
                honest.append(result.payload)
            yield delivery
        for delivery, update in held:
            rng = np.random.default_rng(
                [self.seed, ATTACK_STREAM, update.round, hash_id(update.client_id)]
            )
            payload = attacked_payload(
                self.kind, update.payload, honest, self.scale, self.noise_std, self.z,
                self.ipm_epsilon, rng,
            )  # fmt: skip
            yield replace(delivery, result=replace(update, payload=payload))

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


def hash_id(client_id: str) -> int:
    """A stable number for a client id (Python's ``hash`` of a str changes per process)."""
    return int.from_bytes(hashlib.sha256(client_id.encode()).digest()[:8], "little")
