"""Core value types: what a client sends, what the server keeps, what a round reports.

All are frozen dataclasses. A round takes a ``ServerState`` and returns a new one, so a run
can be saved after any round and resumed exactly.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from fedstream import checks
from fedstream.compression.codecs import Compression
from fedstream.errors import ClientFailure
from fedstream.params import Params

if TYPE_CHECKING:
    from fedstream.aggregation.updates import UpdateMatrix
    from fedstream.privacy.accountant import PrivacyLedger
    from fedstream.rounds.fleet import InFlight

ClientMetrics = Literal["clear", "summed", "none"]
METRIC_PREFIX = "metric:"
"""Extras named ``metric:<name>`` carry weight × a training metric inside the sum."""

PayloadKind = Literal["delta", "gradient"]
"""What a client sends: ``delta`` = local params − global params; ``gradient`` = ∇loss at
the global params."""


WITHIN_CLIP = "within_clip"
"""The ``ClientUpdate.extras`` entry holding a client's centred clipping bit, ±½."""


@dataclass(frozen=True)
class ClientPrivacy:
    """What a client does to its update before it leaves, for client-level DP.

    The payload is scaled to L2 norm at most ``clip`` (over all entries) and sent with
    weight 1, so adding or removing one client changes the sum by at most ``clip``. With
    ``noise_multiplier > 0`` (local DP) the client itself adds N(0, (noise_multiplier·clip)²)
    to every entry, from its own randomness (``FitTask.noise_seed``, or the OS CSPRNG; always
    the CSPRNG when ``secure_noise``); with 0 the server adds the
    noise to the sum (central DP). The client also reports whether its update was within
    ``clip``, as a centred bit ±½ (``ClientUpdate.extras["within_clip"]``), which adaptive
    clipping needs.
    """

    clip: float
    noise_multiplier: float = 0.0
    secure_noise: bool = False

    def __post_init__(self) -> None:
        checks.positive("clip", self.clip)
        checks.non_negative("noise_multiplier", self.noise_multiplier)


@dataclass(frozen=True)
class SampleDP:
    """Sample-level DP-SGD for local training (Abadi et al. 2016).

    Each of ``steps`` local steps Poisson-samples every example with probability
    ``sampling_rate``, clips each example's gradient to L2 norm ``clip``, adds
    N(0, (noise_multiplier·clip)²) to their sum and divides by the expected batch size
    (sampling_rate × examples). ``steps`` replaces the task's epochs and batch size, so that
    every client's privacy cost per round is the same and the server can account for it.
    The sampling and the noise come from the client's own randomness
    (``FitTask.noise_seed``); ``secure_noise`` asks for the OS CSPRNG even where a
    simulated device has a seed.
    """

    clip: float
    noise_multiplier: float
    sampling_rate: float
    steps: int
    secure_noise: bool = False

    def __post_init__(self) -> None:
        checks.positive("dp_sample_clip", self.clip)
        checks.non_negative("noise_multiplier", self.noise_multiplier)
        checks.in_unit_interval(
            "dp_sampling_rate", self.sampling_rate, include_zero=False, include_one=True
        )
        checks.positive_int("steps", self.steps)


@dataclass(frozen=True)
class FitConfig:
    """What the server asks a client to do in one training task.

    ``batch_size = 0`` means full batch. ``proximal_mu > 0`` adds FedProx's
    μ/2·‖w − w_global‖² to the local objective. ``payload = "gradient"`` asks for one
    full-batch gradient at the global params (FedSGD) instead of local training.
    ``seed`` drives the client's own shuffling, so results do not depend on which
    process or in which order clients run. ``privacy`` asks for a clipped (and, for local
    DP, noised) update; ``sample_dp`` asks for DP-SGD instead of plain SGD.
    ``local_entries`` name the model entries that stay on the client (``client.local``):
    the client trains them from its own values and leaves them out of its update.
    ``algorithm`` names what the client does around its training (``client.algorithms``):
    ``"sgd"``, ``"scaffold"``, ``"fednova"``, ``"feddyn"`` or ``"ditto"``;
    ``personal_lambda`` is Ditto's λ, the pull of each personal model towards the global
    one; ``personal_epochs`` FedRep's epochs on the personal head before the round's
    ``local_epochs`` on the shared body.
    ``client_metrics`` says how the client's training metrics travel: ``"clear"`` beside
    the update, ``"summed"`` only inside the (secure) sum as weight·value extras, or
    ``"none"`` not at all (``client.encode.metrics_for_wire``).
    """

    local_epochs: int = 1
    batch_size: int = 10
    lr: float = 0.05
    proximal_mu: float = 0.0
    payload: PayloadKind = "delta"
    seed: int = 0
    privacy: ClientPrivacy | None = None
    sample_dp: SampleDP | None = None
    secure_aggregation: bool = False
    compression: Compression | None = None
    broadcast: str = "none"
    masked: bool = False
    local_entries: tuple[str, ...] = ()
    algorithm: str = "sgd"
    client_metrics: ClientMetrics = "clear"
    personal_lambda: float = 0.0
    personal_epochs: int = 0

    def cohort_key(self) -> tuple[object, ...]:
        """Every setting but the seed: tasks with equal keys can be trained as one
        vectorised cohort. Read from the fields, so a new setting is never left out.
        (Cheaper than ``replace(config, seed=0)``, which matters at thousands of clients
        per round.)"""
        return _COHORT_FIELDS(self)

    def with_seed(self, seed: int) -> FitConfig:
        """This config with ``seed``: what ``replace(config, seed=seed)`` gives, at a tenth
        of its cost (a round makes one per sampled client, thousands at cross-device scale;
        no field needs re-checking, since only the seed changes)."""
        clone = object.__new__(FitConfig)
        clone.__dict__.update(self.__dict__)
        clone.__dict__["seed"] = seed
        return clone


_COHORT_FIELDS = operator.attrgetter(*(f.name for f in fields(FitConfig) if f.name != "seed"))


@dataclass(frozen=True)
class ClientUpdate:
    """One client's answer to a training task.

    ``payload`` is a delta or a gradient (see ``PayloadKind``), shaped like the global
    params. ``weight`` is the number of training examples it came from (FedAvg's n_k).
    ``metrics`` are plain numbers such as the mean training loss. ``extras`` are scalars
    the server may only learn summed over clients, so they travel inside the secure sum
    beside the payload (e.g. DP's centred ``within_clip`` bit for adaptive clipping).
    """

    client_id: str
    round: int
    payload: Params
    weight: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    extras: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdateBlock:
    """Several clients' plain updates of one round, stacked: row k of every payload array
    (shape (K, *entry shape)), ``weights[k]`` and ``metrics[k]`` belong to
    ``client_ids[k]``.

    A cohort trained together travels to the server as one block when its clients send
    their updates as trained (no compression, privacy, local entries or client
    algorithm), so the server checks and sums K updates in a few array operations
    instead of K rounds of Python calls (docs/architecture.md, "The seams": stacked
    cohorts). A block has no extras: updates that carry some travel one by one.
    """

    client_ids: tuple[str, ...]
    round: int
    payload: Params
    weights: npt.NDArray[np.float64]
    metrics: tuple[Mapping[str, float], ...]

    def __post_init__(self) -> None:
        count = len(self.client_ids)
        rows = {
            "weights": self.weights.shape,
            "metrics": (len(self.metrics),),
            **{f"payload[{n!r}]": a.shape[:1] for n, a in self.payload.items()},
        }
        for what, shape in rows.items():
            if shape != (count,):
                raise ValueError(f"UpdateBlock {what} has {shape} rows, expected ({count},)")

    def __len__(self) -> int:
        return len(self.client_ids)

    def row(self, k: int) -> ClientUpdate:
        """Row ``k`` as its client's ``ClientUpdate`` (its payload views the block's)."""
        payload = Params({n: a[k] for n, a in self.payload.items()})
        return ClientUpdate(
            self.client_ids[k], self.round, payload, float(self.weights[k]), self.metrics[k]
        )

    def rows(self) -> list[ClientUpdate]:
        """Every row as a ``ClientUpdate``, in the block's order."""
        return [self.row(k) for k in range(len(self))]

    def take(self, rows: Sequence[int]) -> UpdateBlock:
        """The block of ``rows`` (indices, in the order given): this block when they are
        all of its rows in order, views when they are one ascending run, else copies."""
        first = rows[0] if rows else 0
        if list(rows) == list(range(first, first + len(rows))):
            if len(rows) == len(self):
                return self
            chosen: slice | npt.NDArray[np.intp] = slice(first, first + len(rows))
        else:
            chosen = np.asarray(rows, dtype=np.intp)
        return UpdateBlock(
            tuple(self.client_ids[k] for k in rows),
            self.round,
            Params({n: a[chosen] for n, a in self.payload.items()}),
            self.weights[chosen],
            tuple(self.metrics[k] for k in rows),
        )

    @classmethod
    def gather(cls, rows: Sequence[tuple[UpdateBlock, int]]) -> UpdateBlock:
        """One block of the given rows (each a block and a row index), in the order given,
        from blocks of one round and layout: ``take`` when they all come from one block,
        else one copy through the blocks joined."""
        blocks = list({id(block): block for block, _ in rows}.values())
        if len(blocks) == 1:
            return blocks[0].take([k for _, k in rows])
        starts, offset = {}, 0
        for block in blocks:
            starts[id(block)] = offset
            offset += len(block)
        positions = np.array([starts[id(block)] + k for block, k in rows], dtype=np.intp)
        first = blocks[0]
        joined = {n: np.concatenate([b.payload[n] for b in blocks]) for n in first.payload}
        return cls(
            tuple(block.client_ids[k] for block, k in rows),
            first.round,
            Params({n: a[positions] for n, a in joined.items()}),
            np.concatenate([b.weights for b in blocks])[positions],
            tuple(block.metrics[k] for block, k in rows),
        )

    @classmethod
    def stack(cls, updates: Sequence[ClientUpdate]) -> UpdateBlock:
        """The updates of one round, stacked in the order given. Each must have no extras
        and the layout of the first."""
        if not updates:
            raise ValueError("an UpdateBlock needs at least one update")
        first = updates[0]
        for update in updates:
            if update.round != first.round or update.extras:
                raise ValueError(
                    f"update of {update.client_id!r} cannot join a block: round "
                    f"{update.round} (the block's is {first.round}), extras "
                    f"{sorted(update.extras)} (a block carries none)"
                )
            first.payload.check_compatible(update.payload, "stacked payload")
        return cls(
            tuple(u.client_id for u in updates),
            first.round,
            Params({n: np.stack([u.payload[n] for u in updates]) for n in first.payload}),
            np.array([u.weight for u in updates], dtype=np.float64),
            tuple(u.metrics for u in updates),
        )


@dataclass(frozen=True)
class EvaluateResult:
    """One client's evaluation of the global params on its local test split."""

    client_id: str
    round: int
    num_examples: int
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class WeightedSum:
    """What a secure-sum backend reveals: Σ weight·payload over ``count`` clients, and Σ weight.

    Sum-based strategies see only this, never individual updates, so they work with every
    backend (plain, masking, homomorphic encryption). ``extras`` holds the unweighted sums
    of the clients' ``ClientUpdate.extras``. ``updates`` holds the round's individual
    updates, and only for a strategy that asks for them (``needs_individual_updates``,
    e.g. a robust rule); it is never set under a secure sum. ``population`` is how many
    clients the round sampled from (SCAFFOLD scales its control variate by it).
    """

    total: Params
    weight: float
    count: int
    extras: Mapping[str, float] = field(default_factory=dict)
    updates: UpdateMatrix | None = None
    population: int = 0

    def mean(self) -> Params:
        """Σ w·x / Σ w, the example-weighted mean payload; zero for an empty sum (a round
        no client joined moves nothing)."""
        if self.weight == 0:
            return self.total.map(np.zeros_like)
        return self.total / self.weight


@dataclass(frozen=True)
class ServerState:
    """Everything the server needs to continue a run after round ``round``.

    ``round`` counts completed rounds (0 before the first). ``optimizer`` holds server
    optimiser moments by name (``"m"``, ``"v"``), each shaped like ``params``.
    ``accountant`` holds the privacy ledgers by kind of guarantee (``"client"``,
    ``"local"``, ``"sample"``): history only, ε is computed from it. ``clip_norm`` is the
    current client-level DP clip bound (adaptive clipping moves it every round).
    ``rng_state`` is the numpy ``PCG64`` bit-generator state used to sample clients and seed
    them, so a resumed run draws exactly what an uninterrupted one would. ``in_flight`` is
    an asynchronous run's work in progress (``rounds.buffered.InFlight``); ``None`` in a
    synchronous one.
    """

    round: int
    params: Params
    optimizer: Mapping[str, Params] = field(default_factory=dict)
    accountant: Mapping[str, PrivacyLedger] = field(default_factory=dict)
    clip_norm: float | None = None
    rng_state: Mapping[str, Any] = field(default_factory=dict)
    in_flight: InFlight | None = None

    @classmethod
    def initial(cls, params: Params, seed: int | np.random.SeedSequence) -> ServerState:
        """State before round 1, with the generator seeded from ``seed``."""
        return cls(round=0, params=params, rng_state=np.random.PCG64(seed).state)

    def generator(self) -> np.random.Generator:
        """A fresh generator positioned at ``rng_state`` (the state itself is not touched)."""
        bit_generator = np.random.PCG64()
        bit_generator.state = dict(self.rng_state)  # type: ignore[assignment]
        return np.random.Generator(bit_generator)

    def evolve(self, **changes: Any) -> ServerState:
        return replace(self, **changes)


@dataclass(frozen=True)
class RoundReport:
    """What happened in one round: who was asked, who answered, who failed, traffic, times.

    ``bytes_down`` / ``bytes_up`` are the encoded sizes of what was sent to and received
    from clients (wire format, exact). ``times`` are wall-clock seconds per phase.
    ``metrics`` holds ``train_loss`` (weighted by examples), ``fed_*`` (federated evaluation on
    client test splits, weighted by examples) and ``central_*`` (held-out set).
    ``evaluations`` holds each evaluating client's own metrics (global and, with
    personalisation, ``personal_*``). ``data_times`` holds, on a clock, when each
    completed client's task read its data (simulated s), so an example's wait until a
    served model was trained on it can be measured (``data.stream.freshness``).
    """

    round: int
    sampled: tuple[str, ...]
    completed: tuple[str, ...]
    failures: tuple[ClientFailure, ...]
    bytes_down: int
    bytes_up: int
    times: Mapping[str, float]
    metrics: Mapping[str, float]
    evaluations: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    data_times: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "round": self.round,
            "sampled": list(self.sampled),
            "completed": list(self.completed),
            "failures": [asdict(f) for f in self.failures],
            "bytes_down": self.bytes_down,
            "bytes_up": self.bytes_up,
            "times": dict(self.times),
            "metrics": dict(self.metrics),
            "evaluations": {c: dict(m) for c, m in self.evaluations.items()},
            "data_times": dict(self.data_times),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundReport:
        """The inverse of :meth:`to_dict`."""
        return cls(
            round=int(data["round"]),
            sampled=tuple(data["sampled"]),
            completed=tuple(data["completed"]),
            failures=tuple(ClientFailure(**f) for f in data["failures"]),
            bytes_down=int(data["bytes_down"]),
            bytes_up=int(data["bytes_up"]),
            times={k: float(v) for k, v in data["times"].items()},
            metrics={k: float(v) for k, v in data["metrics"].items()},
            evaluations={
                c: {k: float(v) for k, v in m.items()}
                for c, m in data.get("evaluations", {}).items()
            },
            data_times={c: float(t) for c, t in data.get("data_times", {}).items()},
        )
