"""Simulated attackers, for experiments on robust aggregation: a share of the clients,
drawn from the run's seed, replace their honest update before it is sent.

- ``sign_flip``: −scale × the honest update;
- ``scale``: scale × the honest update (model replacement when scale ≈ clients a round);
- ``gaussian``: noise N(0, noise_std²) in every entry, in place of the update;
- ``alie`` ("a little is enough", Baruch et al. 2019): every attacker sends the honest
  updates' coordinate mean − z·std, z from the number of clients and attackers;
- ``ipm`` (inner-product manipulation, Xie et al. 2020): −ε × the honest updates' mean.

The last two collude: the attackers see the honest updates of the round, as those attacks
assume. Two more attack through the attackers' own training data instead:

- ``label_flip``: every training label y becomes C − 1 − y (Tolpegin et al. 2020);
- ``backdoor``: a trigger (the last ``TRIGGER_SIZE`` entries of each example's flattened
  features set to the training data's largest value: on 8×8 digits, the four rightmost
  pixels of the bottom row) on ``poison_fraction`` of the attacker's examples, relabelled
  ``target`` (Bagdasaryan et al. 2020). The central evaluation then also reports
  ``backdoor_success``: the share of held-out examples of other classes that the model
  puts in ``target`` once they carry the trigger.
 Each attacker keeps its declared weight (a rule that counts clients once ignores
it anyway). The attackers are wrapped around the run's transport, so they work with the
in-process clients, worker processes and Ray; the updates they rewrite are the dense ones,
so a codec or a secure sum (which hides them) is a configuration error.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from fedstream.client.base import FitTask
from fedstream.data.base import ClientData
from fedstream.params import Params
from fedstream.transport.base import Delivery, Transport, TransportWrapper
from fedstream.types import ClientUpdate

UPDATE_ATTACKS = ("sign_flip", "scale", "gaussian", "alie", "ipm")
DATA_ATTACKS = ("label_flip", "backdoor")
ATTACKS = ("none", *UPDATE_ATTACKS, *DATA_ATTACKS)
TRIGGER_SIZE = 4
ATTACK_STREAM = 0x41545441  # separates the attackers' draw from every other use of the seed


def choose_attackers(client_ids: Sequence[str], fraction: float, seed: int) -> tuple[str, ...]:
    """round(fraction × N) of the clients, drawn without replacement from ``seed``; sorted."""
    count = round(fraction * len(client_ids))
    rng = np.random.default_rng([seed, ATTACK_STREAM])
    chosen = rng.choice(len(client_ids), size=count, replace=False)
    return tuple(sorted(client_ids[i] for i in chosen))


def add_trigger(x: npt.NDArray[Any], value: float) -> npt.NDArray[Any]:
    """A copy of ``x`` (examples on axis 0) with each example's last ``TRIGGER_SIZE``
    flattened entries set to ``value``."""
    out = np.array(x, copy=True)
    if not len(out):
        return out
    flat = out.reshape(len(out), -1)
    flat[:, -TRIGGER_SIZE:] = value
    return out


def poison(
    data: ClientData,
    kind: str,
    classes: int,
    target: int,
    poison_fraction: float,
    trigger_value: float,
    rng: np.random.Generator,
) -> ClientData:
    """An attacker's training data under a data attack (its test split is left alone)."""
    y = np.array(data.y_train, copy=True)
    if kind == "label_flip":
        return replace(data, y_train=(classes - 1 - y).astype(y.dtype))
    count = round(poison_fraction * len(y))
    chosen = rng.choice(len(y), size=count, replace=False)
    x = np.array(data.x_train, copy=True)
    x[chosen] = add_trigger(x[chosen], trigger_value)
    y[chosen] = target
    return replace(data, x_train=x, y_train=y)


class PoisonedClients(Mapping[str, ClientData]):
    """The clients' data, with each attacker's training data poisoned when it is read (so
    an app's clients are still read one at a time, on first use)."""

    def __init__(
        self,
        clients: Mapping[str, ClientData],
        attackers: Sequence[str],
        poisoner: Callable[[str, ClientData], ClientData],
    ) -> None:
        self._clients = clients
        self._attackers = frozenset(attackers)
        self._poisoner = poisoner

    def __getitem__(self, client_id: str) -> ClientData:
        data = self._clients[client_id]
        return self._poisoner(client_id, data) if client_id in self._attackers else data

    def __iter__(self) -> Iterator[str]:
        return iter(self._clients)

    def __len__(self) -> int:
        return len(self._clients)


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
    if kind not in ("alie", "ipm"):
        raise ValueError(f"attack kind {kind!r} does not rewrite updates")
    reference = honest if honest else [own]
    stacked = np.stack([p.flat() for p in reference])
    mean = stacked.mean(axis=0)
    flat = mean - z * stacked.std(axis=0) if kind == "alie" else -ipm_epsilon * mean
    return Params.from_flat(flat, own)


class Attacks(TransportWrapper):
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
        super().__init__(inner)
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


def hash_id(client_id: str) -> int:
    """A stable number for a client id (Python's ``hash`` of a str changes per process)."""
    return int.from_bytes(hashlib.sha256(client_id.encode()).digest()[:8], "little")
