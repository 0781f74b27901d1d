"""``RoundConfig``: how every round samples, trains, aggregates and evaluates."""

from __future__ import annotations

from dataclasses import dataclass

from fedstream import checks
from fedstream.aggregation.updates import DEFAULT_BUDGET_BYTES
from fedstream.compression.codecs import BROADCASTS, Compression
from fedstream.errors import ConfigError
from fedstream.secure.he import HEConfig
from fedstream.secure.secagg import SecAggConfig
from fedstream.types import ClientMetrics, FitConfig

SecureSumConfig = SecAggConfig | HEConfig


@dataclass(frozen=True)
class UpdateBounds:
    """What an update may be. ``max_norm`` bounds its L2 norm and, scaled by its weight
    relative to the round's median weight, its pull on the average; ``max_weight`` bounds
    its declared weight; ``outlier_factor`` rejects an update whose weight or norm exceeds
    that multiple of the round's median (docs/deployment.md, "Lying clients"). The bounds
    relative to the round hold its accepted updates until every answer is in."""

    max_norm: float | None = None
    max_weight: float | None = None
    outlier_factor: float | None = None

    @property
    def relative(self) -> bool:
        return self.max_norm is not None or self.outlier_factor is not None


@dataclass(frozen=True)
class RoundConfig:
    """How each round samples, trains and evaluates.

    ``clients_per_round`` is a count (int ≥ 1) or a fraction of all clients (float in
    (0, 1]); at least ``min_clients`` are sampled and at least that many valid updates are
    needed to aggregate. ``sampling`` is ``"fixed"`` (exactly that many, without
    replacement) or ``"poisson"`` (each client independently with probability
    clients_per_round / clients, so a round's size varies and may be 0; what differential
    privacy's accountant assumes). ``evaluate_fraction`` of all clients evaluate the new
    global model on their test splits every ``evaluate_every`` rounds (0 disables
    federated evaluation). ``max_update_norm`` rejects payloads whose L2 norm, or whose
    pull (norm × weight / the round's median weight), exceeds it; ``max_client_weight``
    rejects a declared weight above it; ``outlier_factor`` rejects a weight or norm above
    that multiple of the round's median (``collect.UpdateBounds``).

    ``compression`` encodes each update on its client (``fedstream.compression``) and
    ``broadcast`` the global params sent to clients (``"none"``, ``"f16"``, ``"q8"``).
    ``prune_fraction`` of each weight tensor is pruned by magnitude after every server
    update (whole output units with ``prune_structured``); clients keep pruned weights at
    zero and send only the kept entries. With ``personalize_epochs`` every evaluating
    client also adapts the global model to its own data for that many epochs and reports
    both (``fed_personal_*``, and per client in ``RoundReport.evaluations``).
    ``local_entries`` name model entries that stay on the clients besides the integer ones
    (``fedstream.client.local``; FedBN keeps every BatchNorm entry there). A strategy that
    reads each update (a robust rule) keeps them in memory up to ``updates_budget_bytes``,
    and in a memory-mapped temporary file beyond.

    With ``secure_aggregation`` the sum is computed by SecAgg+ (``SecAggConfig``) or under
    homomorphic encryption (``CKKSConfig``, ``PaillierConfig``): the server never sees an
    update, only the sum over the clients that completed the protocol.

    ``client_metrics`` (``FitConfig.client_metrics``) is how clients' training metrics
    reach the server; only ``"clear"`` runs federated evaluation, whose per-client
    results are in the clear.

    Systems heterogeneity (stragglers) is not a round setting: a simulation passes a task
    policy to :func:`fedstream.rounds.run_round` (``fedstream.simulation.stragglers``).

    The defaults are generic and cautious (10 clients a round, 1 epoch, lr 0.05). A
    simulation's differ: ``SimulationConfig().round_config()`` carries its default job's
    settings (20 a round, 5 epochs, lr 0.3), as the README says.
    """

    clients_per_round: int | float = 10
    min_clients: int = 1
    sampling: str = "fixed"
    local_epochs: int = 1
    batch_size: int = 10
    lr: float = 0.05
    evaluate_fraction: float = 1.0
    evaluate_every: int = 1
    max_update_norm: float | None = None
    max_client_weight: float | None = None
    outlier_factor: float | None = None
    secure_aggregation: SecureSumConfig | None = None
    compression: Compression | None = None
    broadcast: str = "none"
    prune_fraction: float = 0.0
    prune_structured: bool = False
    personalize_epochs: int = 0
    local_entries: tuple[str, ...] = ()
    updates_budget_bytes: int = DEFAULT_BUDGET_BYTES
    client_metrics: ClientMetrics = "clear"

    def __post_init__(self) -> None:
        per_round = self.clients_per_round
        if isinstance(per_round, float):
            checks.in_unit_interval(
                "clients_per_round", per_round, include_zero=False, include_one=True
            )
        else:
            checks.positive_int("clients_per_round", per_round)
        checks.positive_int("min_clients", self.min_clients)
        checks.one_of("sampling", self.sampling, ["fixed", "poisson"])
        checks.one_of("client_metrics", self.client_metrics, ["clear", "summed", "none"])
        checks.positive_int("local_epochs", self.local_epochs)
        checks.non_negative_int("batch_size", self.batch_size)
        checks.positive("lr", self.lr)
        checks.in_unit_interval(
            "evaluate_fraction", self.evaluate_fraction, include_zero=True, include_one=True
        )
        checks.non_negative_int("evaluate_every", self.evaluate_every)
        if self.max_update_norm is not None:
            checks.positive("max_update_norm", self.max_update_norm)
        if self.max_client_weight is not None:
            checks.positive("max_client_weight", self.max_client_weight)
        if self.outlier_factor is not None and not self.outlier_factor > 1:
            raise ConfigError("outlier_factor", self.outlier_factor, "a number > 1")
        checks.one_of("broadcast", self.broadcast, list(BROADCASTS))
        checks.non_negative_int("personalize_epochs", self.personalize_epochs)
        checks.positive_int("updates_budget_bytes", self.updates_budget_bytes)
        checks.in_unit_interval(
            "prune_fraction", self.prune_fraction, include_zero=True, include_one=False
        )
        codec, secure = self.compression, self.secure_aggregation
        if codec is not None and secure is not None and not codec.secure_sum_compatible:
            raise ConfigError(
                "compression",
                codec.spec,
                f"no sparsifier with secure_aggregation={secure.scheme!r}: each "
                "client's sparse support differs, so a masked or encrypted sum cannot add "
                "them (quantisers q8, q4 and qsgd compose with it)",
            )

    @property
    def bounds(self) -> UpdateBounds:
        """What the server accepts of an update."""
        return UpdateBounds(self.max_update_norm, self.max_client_weight, self.outlier_factor)

    def fit_config(self) -> FitConfig:
        """The task config every sampled client starts from, before the strategy adds its
        own settings and the round its seed."""
        return FitConfig(
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            secure_aggregation=self.secure_aggregation is not None,
            compression=self.compression,
            broadcast=self.broadcast,
            masked=self.prune_fraction > 0,
            client_metrics=self.client_metrics,
        )
