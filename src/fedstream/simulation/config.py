"""``SimulationConfig``: every setting of a simulated run, by concern.

Twelve sections, each a small frozen dataclass whose fields carry their help text:

| section | what it sets |
|---|---|
| ``data`` | the data set and how it is split over clients |
| ``model`` | the model, or the user's own app |
| ``strategy`` | the federated strategy, its declared hyperparameters, the aggregator |
| ``client`` | local training |
| ``run`` | rounds, sampling, validation bound, evaluation |
| ``privacy`` | differential privacy |
| ``secure`` | the secure sum |
| ``compression`` | codecs each way, pruning |
| ``execution`` | trainer, seed, threads, where clients train |
| ``attack`` | simulated attackers, for experiments on robust aggregation |
| ``asynchronous`` | the buffered loop (FedBuff) when ``run.mode = "async"`` |
| ``clock`` | simulated device speeds, for time-to-accuracy |

The same keys everywhere: a TOML file has a table per section (``[strategy]`` then
``mu = 0.01``), a flag is ``--section.field`` (``--strategy.mu 0.01``), and Python passes a
mapping per section (``simulate(strategy={"name": "fedprox", "mu": 0.01})``). A strategy's
hyperparameters are the fields of its dataclass (``fedstream.strategies``), with their help;
the config knows no list of them. A key in the old flat form, or a mistyped one, is an error
that names the key to write instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedstream import checks
from fedstream.aggregation.robust import ROBUST_RULES, check_byzantine
from fedstream.compression.codecs import Compression
from fedstream.data.datasets import (
    DATASETS,
    NATURAL_ONLY,
    PARTITIONS,
    REGRESSION,
    check_feature_noise,
    check_partition,
    check_shakespeare_fraction,
)
from fedstream.data.shakespeare import EDITIONS
from fedstream.data.stream import check_timing
from fedstream.errors import ConfigError
from fedstream.models import MODELS
from fedstream.privacy.accountant import AccountantMethod
from fedstream.privacy.dp import DP_LEVELS, ClientSampling, DifferentialPrivacy, DPLevel
from fedstream.rounds import RoundConfig, sample_size
from fedstream.rounds.buffered import ROUND_ALGORITHMS, BufferConfig
from fedstream.rounds.staleness import StalenessRule
from fedstream.secure.he import CKKSConfig, HEConfig, PaillierConfig
from fedstream.secure.secagg import SecAggConfig
from fedstream.simulation.attacks import ATTACKS, DATA_ATTACKS, UPDATE_ATTACKS
from fedstream.simulation.clock import SPEEDS
from fedstream.simulation.stragglers import Stragglers
from fedstream.strategies import STRATEGIES, make_strategy
from fedstream.strategies.base import Strategy
from fedstream.strategies.robust import Robust
from fedstream.types import ClientMetrics

SECURE_SUMS = {"secagg+": "SecAgg+", "ckks": "CKKS", "paillier": "Paillier"}
TRAINERS = ("auto", "sequential", "vectorized")
DEPLOYED_OUTLIER_FACTOR = 10.0  # run.outlier_factor when unset, in a deployment
EXECUTORS = ("inprocess", "processes", "ray")


def setting(default: Any, help: str) -> Any:
    """A config field with its help text beside it."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class DataSettings:
    """``[data]``: the data set and how it is split over clients."""

    dataset: str = setting("digits", f"data set: {', '.join(DATASETS)}")
    num_clients: int = setting(100, "number of clients the data is split over")
    partition: str | None = setting(
        None,
        f"how data is split: {', '.join(PARTITIONS)} "
        "(default: natural for synthetic and shakespeare, iid for diabetes, else dirichlet)",
    )
    alpha: float = setting(0.5, "Dirichlet concentration for label skew (smaller = more skew)")
    shards_per_client: int = setting(2, "shards partition: label-sorted shards per client")
    quantity_sigma: float = setting(1.0, "quantity partition: σ of the lognormal client sizes")
    feature_noise: float = setting(
        0.0,
        "feature skew (NIID-Bench): client k of N adds Gaussian noise of σ·(k+1)/N to its "
        "features; σ here (0 = off)",
    )
    heldout_fraction: float = setting(0.2, "share held out for centralised evaluation")
    client_test_fraction: float = setting(0.2, "share of each client's data kept for its tests")
    synthetic_alpha: float = setting(1.0, "Synthetic(α, β): how much client models differ")
    synthetic_beta: float = setting(1.0, "Synthetic(α, β): how much client data differ")
    synthetic_samples: int | None = setting(
        None, "Synthetic: examples per client (default: the paper's lognormal sizes)"
    )
    shakespeare_source: str | None = setting(
        None, "folder of the Shakespeare texts (default: fetched into the cache)"
    )
    shakespeare_edition: str = setting("modern", f"Shakespeare edition: {', '.join(EDITIONS)}")
    shakespeare_fraction: float | None = setting(
        None,
        "Shakespeare: build the data as LEAF's paper experiment does (sample roles until "
        "this fraction of all windows, drop roles under 64, split windows at random; LEAF "
        "used 0.05); replaces num_clients",
    )

    def __post_init__(self) -> None:
        checks.one_of("data.dataset", self.dataset, list(DATASETS))
        checks.positive_int("data.num_clients", self.num_clients)
        with qualified():
            check_partition(self.dataset, self.split)
        checks.positive("data.alpha", self.alpha)
        checks.positive_int("data.shards_per_client", self.shards_per_client)
        checks.non_negative("data.quantity_sigma", self.quantity_sigma)
        with qualified():
            check_feature_noise(self.dataset, self.feature_noise)
        for name in ("heldout_fraction", "client_test_fraction"):
            checks.in_unit_interval(
                f"data.{name}", getattr(self, name), include_zero=True, include_one=False
            )
        checks.non_negative("data.synthetic_alpha", self.synthetic_alpha)
        checks.non_negative("data.synthetic_beta", self.synthetic_beta)
        if self.synthetic_samples is not None:
            checks.positive_int("data.synthetic_samples", self.synthetic_samples)
        checks.one_of("data.shakespeare_edition", self.shakespeare_edition, list(EDITIONS))
        with qualified():
            check_shakespeare_fraction(self.dataset, self.shakespeare_fraction)

    @property
    def split(self) -> str:
        """The partition in force: as set, or the data set's natural one by default."""
        if self.partition is not None:
            return self.partition
        if self.dataset in NATURAL_ONLY:
            return "natural"
        return "iid" if self.dataset in REGRESSION else "dirichlet"

    def federate_kwargs(self) -> dict[str, Any]:
        """The arguments of ``fedstream.data.federate`` that this section sets."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        name = values.pop("dataset")
        return {**values, "name": name, "partition": self.split}


@dataclass(frozen=True)
class ModelSettings:
    """``[model]``: the model, or the user's own app."""

    name: str = setting("mlp", f"built-in model: {', '.join(MODELS)}")
    hidden: tuple[int, ...] | None = setting(
        None, "hidden widths: MLP layers (64,64), CNN channels (16,32), LSTM layers (256,256)"
    )
    app: str | None = setting(
        None,
        "your own model, data and training: an App at package.module:attribute (replaces "
        "the data settings and the built-in model)",
    )
    local_batchnorm: bool = setting(
        False,
        "FedBN: every BatchNorm layer's weights and statistics stay on each client (else its "
        "statistics are averaged with the weights)",
    )
    personal: tuple[str, ...] = setting(
        (),
        "FedPer, FedRep: modules (names or dotted prefixes, e.g. fc2) whose entries stay "
        "on each client as its personal layers, the rest shared (an app may add a "
        "predicate on entry names, App.personal)",
    )

    def __post_init__(self) -> None:
        checks.one_of("model.name", self.name, list(MODELS))
        for width in self.hidden or ():
            checks.positive_int("model.hidden", width)


@dataclass(frozen=True)
class StrategySettings:
    """``[strategy]``: the strategy, its hyperparameters, and how updates are combined.

    ``hyperparameters`` holds the strategy's own settings by name (``mu``, ``server_lr``,
    …): each must be a field of the chosen strategy's dataclass; those not given take the
    strategy's defaults."""

    name: str = setting("fedavg", f"federated strategy: {', '.join(STRATEGIES)}")
    aggregator: str = setting(
        "mean",
        f"mean (the weighted sum), or a robust rule over each update: {', '.join(ROBUST_RULES)}",
    )
    trim_fraction: float = setting(
        0.1, "trimmed_mean: share of values dropped at each end of every coordinate"
    )
    byzantine: int = setting(
        1, "krum, multi_krum, bulyan: attackers f to tolerate (n > 2f+2; bulyan n > 4f+3)"
    )
    clip_radius: float | None = setting(
        None, "centered_clipping: radius τ (default: the median of each step's distances)"
    )
    norm_bound: float | None = setting(
        None, "norm_bound: largest update norm M (default: the median of the round's norms)"
    )
    bucket_size: int = setting(
        1, "robust rules: average the shuffled updates in buckets of this size first (1 = off)"
    )
    hyperparameters: Mapping[str, Any] = field(
        default_factory=dict, metadata={"help": "the strategy's own settings, by name"}
    )

    def __post_init__(self) -> None:
        checks.one_of("strategy.name", self.name, list(STRATEGIES))
        checks.one_of("strategy.aggregator", self.aggregator, ["mean", *ROBUST_RULES])
        checks.in_unit_interval(
            "strategy.trim_fraction", self.trim_fraction, include_zero=True, include_one=False
        )
        checks.non_negative_int("strategy.byzantine", self.byzantine)
        checks.positive_int("strategy.bucket_size", self.bucket_size)
        for name in ("clip_radius", "norm_bound"):
            if getattr(self, name) is not None:
                checks.positive(f"strategy.{name}", getattr(self, name))
        declared = hyperparameters_of(self.name)
        for key, value in self.hyperparameters.items():
            if key not in declared:
                raise ConfigError(
                    f"strategy.{key}",
                    value,
                    f"a hyperparameter of {self.name}: {sorted(declared)}"
                    + _nearest(key, declared),
                )

    def build(self) -> Strategy:
        """The strategy, robust when the aggregator asks for it."""
        strategy = make_strategy(self.name, **self.hyperparameters)
        if self.aggregator == "mean":
            return strategy
        return Robust(
            strategy,
            self.aggregator,
            self.trim_fraction,
            self.byzantine,
            self.clip_radius,
            self.norm_bound,
            self.bucket_size,
        )


@dataclass(frozen=True)
class ClientSettings:
    """``[client]``: each client's local training, and simulated stragglers."""

    local_epochs: int = setting(5, "local epochs per round")
    batch_size: int = setting(10, "local batch size (0 = full batch)")
    lr: float = setting(0.3, "client learning rate (SGD)")
    straggler_fraction: float = setting(0.0, "share of each round's clients that are stragglers")
    drop_stragglers: bool = setting(
        True, "true: drop stragglers (FedAvg); false: keep their partial work (FedProx)"
    )

    def __post_init__(self) -> None:
        checks.positive_int("client.local_epochs", self.local_epochs)
        checks.non_negative_int("client.batch_size", self.batch_size)
        checks.positive("client.lr", self.lr)
        Stragglers(self.straggler_fraction, self.drop_stragglers)
        if self.straggler_fraction > 0 and self.local_epochs < 2:
            raise ConfigError(
                "client.local_epochs", self.local_epochs, "at least 2 when there are stragglers"
            )


@dataclass(frozen=True)
class RunSettings:
    """``[run]``: how many rounds, who takes part, what is refused, what is evaluated."""

    rounds: int = setting(30, "number of rounds (server steps in an asynchronous run)")
    mode: str = setting(
        "sync",
        "sync: rounds that wait for their sampled clients; async: the buffered loop "
        "(FedBuff, [asynchronous]), clients training at once and a server step every "
        "buffer_size updates",
    )
    clients_per_round: int | float = setting(
        20, "clients sampled per round: a count (20) or a fraction (0.2)"
    )
    min_clients: int = setting(1, "minimum clients sampled and valid updates needed per round")
    sampling: str = setting(
        "auto",
        "how a round samples its clients: fixed (exactly clients_per_round, without "
        "replacement), poisson (each client with probability clients_per_round / clients; "
        "what the DP accountant assumes), or auto (poisson when privacy is on)",
    )
    max_update_norm: float | None = setting(
        None,
        "reject updates whose L2 norm exceeds this, or whose norm × weight / the round's "
        "median weight does",
    )
    max_client_weight: float | None = setting(
        None, "reject updates that declare a weight (example count) above this"
    )
    outlier_factor: float | None = setting(
        None,
        "reject updates whose weight or norm exceeds this multiple of the round's median "
        "(0 = off; default: 10 in a deployment, off in a simulation, off with DP or a "
        "secure sum)",
    )
    evaluate_every: int = setting(
        1, "federated and central evaluation every N rounds (0 = last only)"
    )
    evaluate_fraction: float = setting(1.0, "fraction of all clients that evaluate (0 = none)")
    personalize_epochs: int = setting(
        0,
        "evaluating clients also adapt the global model for this many local epochs and "
        "report both (0 = off)",
    )

    def __post_init__(self) -> None:
        checks.positive_int("run.rounds", self.rounds)
        checks.one_of("run.mode", self.mode, ["sync", "async"])
        checks.one_of("run.sampling", self.sampling, ["auto", "fixed", "poisson"])
        factor = self.outlier_factor
        if factor is not None and factor != 0 and not factor > 1:
            raise ConfigError("run.outlier_factor", factor, "0 (off) or a number > 1")


@dataclass(frozen=True)
class PrivacySettings:
    """``[privacy]``: differential privacy."""

    level: str = setting(
        "none",
        "differential privacy: none, client (central DP-FedAvg), local (clients add the "
        "noise), sample (DP-SGD on every client)",
    )
    noise: float = setting(1.0, "noise multiplier z (noise std = z × clip)")
    clip: float = setting(
        1.0,
        "clip bound: each update's L2 norm (client, local; start value when adaptive) or "
        "each example's gradient norm (sample)",
    )
    delta: float = setting(1e-5, "δ at which ε is reported")
    adaptive_clip: bool = setting(
        False, "level=client: move the clip bound to a quantile of the update norms"
    )
    target_quantile: float = setting(
        0.5, "adaptive clipping: share of updates meant to fit within the bound"
    )
    clip_lr: float = setting(0.2, "adaptive clipping: geometric learning rate of the bound")
    clipped_count_stddev: float | None = setting(
        None,
        "adaptive clipping: noise std on the count of unclipped clients (default: clients "
        "per round / 20)",
    )
    sampling_rate: float = setting(
        0.05,
        "level=sample: Poisson rate at which each example joins a local step; local steps "
        "per round = ceil(local_epochs / rate)",
    )
    target_epsilon: float | None = setting(
        None, "refuse to start (or stop) a run that would spend more than this ε"
    )
    secure_noise: bool = setting(
        True,
        "draw DP noise from the OS CSPRNG (unpredictable, not reproducible). false seeds "
        "the server's noise from the run's seed and the clients' from their simulated "
        "devices' secret: reproducible, for tests and benchmarks only, since anyone with "
        "the seed or a checkpoint can redraw the server's noise and remove it",
    )
    accountant: str = setting(
        "rdp", "how ε is computed: rdp, or pld (tighter, about 1 s per round)"
    )
    client_metrics: bool | None = setting(
        None,
        "send each client's own metrics (training loss, federated evaluation) in the "
        "clear. Default: on unless DP or a secure sum is on; then training metrics travel "
        "only inside the secure sum (or not at all) and federated evaluation is off. "
        "Turned on under DP, they are outside ε",
    )

    def __post_init__(self) -> None:
        checks.one_of("privacy.level", self.level, ["none", *DP_LEVELS])
        checks.one_of("privacy.accountant", self.accountant, ["rdp", "pld"])
        checks.in_unit_interval(
            "privacy.sampling_rate", self.sampling_rate, include_zero=False, include_one=True
        )


@dataclass(frozen=True)
class SecureSettings:
    """``[secure]``: the secure sum."""

    scheme: str = setting(
        "none",
        "how the server sums updates: none (plain), secagg+ (masking), ckks or paillier "
        "(homomorphic encryption); all but none show it only the sum",
    )
    neighbours: int | None = setting(
        None,
        "SecAgg+: neighbours each client shares secrets with (default: min(clients per "
        "round − 1, 20))",
    )
    threshold: int | None = setting(
        None,
        "SecAgg+: shares needed to recover a client (default and minimum: ⌊(k + ⌈γk⌉)/2⌋ + "
        "1, so a lying server cannot collect both kinds of share of one client)",
    )
    corrupt_fraction: float = setting(
        0.0, "SecAgg+: share γ of each client's neighbours assumed to collude with the server"
    )
    dropout_rate: float | None = setting(
        None,
        "SecAgg+: share of each client's neighbours a round must survive losing; refused "
        "when no safe threshold allows it",
    )
    fraction_bits: int = setting(24, "SecAgg+: fixed-point fraction bits (step 2^-bits)")
    max_abs: float = setting(
        2.0**20, "SecAgg+: largest magnitude of weight × update entry a client may send"
    )
    he_preset: str = setting(
        "n8192", "CKKS parameters: n4096, n8192 or n16384 (ring degree; all 128-bit secure)"
    )
    paillier_key_bits: int = setting(
        3072, "Paillier modulus bits: 3072 (128-bit security), 4096, or 2048 (112-bit)"
    )
    paillier_fraction_bits: int = setting(16, "Paillier: fixed-point fraction bits")
    paillier_max_abs: float = setting(
        2.0**16, "Paillier: largest magnitude of weight × update entry a client may send"
    )

    def __post_init__(self) -> None:
        checks.one_of("secure.scheme", self.scheme, ["none", *SECURE_SUMS])
        self.backend()

    def backend(self) -> SecAggConfig | HEConfig | None:
        """The secure sum's settings, or ``None`` for the plain sum."""
        if self.scheme == "secagg+":
            return SecAggConfig(
                self.neighbours, self.threshold, self.fraction_bits, self.max_abs,
                self.corrupt_fraction, self.dropout_rate,
            )  # fmt: skip
        if self.scheme == "ckks":
            return CKKSConfig(preset=self.he_preset)
        if self.scheme == "paillier":
            return PaillierConfig(
                self.paillier_key_bits, self.paillier_fraction_bits, self.paillier_max_abs
            )
        return None


@dataclass(frozen=True)
class CompressionSettings:
    """``[compression]``: what travels each way, and pruning."""

    codec: str = setting(
        "none",
        "uplink codec: none, or a sparsifier topk:f, randk:f, threshold:τ (with error "
        "feedback) and/or a quantiser q8, q4, qsgd:s, joined by + (e.g. topk:0.01+q8)",
    )
    broadcast: str = setting("none", "downlink codec for the global model: none, f16, q8")
    prune_fraction: float = setting(
        0.0, "share of each weight tensor pruned by magnitude after every round"
    )
    prune_structured: bool = setting(
        False, "prune whole output units (rows, filters) instead of single weights"
    )

    def uplink(self) -> Compression | None:
        return None if self.codec == "none" else Compression.parse(self.codec)


@dataclass(frozen=True)
class ExecutionSettings:
    """``[execution]``: how and where the clients train."""

    trainer: str = setting(
        "auto", "client trainer: auto (vectorized when the model allows), sequential, vectorized"
    )
    seed: int = setting(0, "seed for data split, model initialisation, sampling and shuffling")
    threads: int = setting(1, "torch intra-op threads (per process)")
    executor: str = setting(
        "inprocess",
        "where clients train: inprocess (this process), processes (persistent worker "
        "processes on this machine), ray (Ray actors, on a cluster with ray_address)",
    )
    workers: int | None = setting(None, "worker processes or Ray actors (default: all cores)")
    ray_address: str | None = setting(
        None, "address of a running Ray cluster (default: start a local one)"
    )

    def __post_init__(self) -> None:
        checks.one_of("execution.trainer", self.trainer, list(TRAINERS))
        checks.non_negative_int("execution.seed", self.seed)
        checks.positive_int("execution.threads", self.threads)
        checks.one_of("execution.executor", self.executor, list(EXECUTORS))
        if self.workers is not None:
            checks.positive_int("execution.workers", self.workers)
        if self.ray_address is not None and self.executor != "ray":
            raise ConfigError(
                "execution.ray_address", self.ray_address, "execution.executor='ray' with it"
            )


@dataclass(frozen=True)
class AttackSettings:
    """``[attack]``: simulated attackers among the clients (``fedstream.simulation.attacks``),
    for experiments on robust aggregation; none by default."""

    kind: str = setting("none", f"what attackers send: {', '.join(ATTACKS)}")
    fraction: float = setting(0.2, "share of all clients that attack, drawn from the seed")
    scale: float = setting(10.0, "sign_flip, scale: factor on the attacker's honest update")
    noise_std: float = setting(1.0, "gaussian: standard deviation of the noise sent")
    z: float | None = setting(
        None, "alie: standard deviations below the honest mean (default: Baruch et al.'s z_max)"
    )
    ipm_epsilon: float = setting(0.5, "ipm: the attackers send −ε × the honest mean")
    target: int = setting(0, "backdoor: the class triggered examples are relabelled to")
    poison_fraction: float = setting(
        0.5, "backdoor: share of each attacker's training examples that carry the trigger"
    )

    def __post_init__(self) -> None:
        checks.one_of("attack.kind", self.kind, list(ATTACKS))
        checks.non_negative_int("attack.target", self.target)
        checks.in_unit_interval(
            "attack.poison_fraction", self.poison_fraction, include_zero=False, include_one=True
        )
        checks.in_unit_interval(
            "attack.fraction", self.fraction, include_zero=True, include_one=False
        )
        checks.positive("attack.scale", self.scale)
        checks.positive("attack.noise_std", self.noise_std)
        if self.z is not None:
            checks.non_negative("attack.z", self.z)
        checks.positive("attack.ipm_epsilon", self.ipm_epsilon)


@dataclass(frozen=True)
class AsyncSettings:
    """``[asynchronous]``: the buffered loop of ``run.mode = "async"``
    (``fedstream.rounds.buffered``)."""

    buffer_size: int = setting(10, "K: a server step every K accepted updates (1 = FedAsync)")
    concurrency: int = setting(20, "clients training at once (at least buffer_size)")
    staleness: str = setting(
        "polynomial",
        "how a stale update counts: constant (1), polynomial ((1 + s)^-a), hinge (1 up "
        "to b steps, then 1 / (a·(s − b) + 1)); s = server steps since its model",
    )
    staleness_exponent: float = setting(0.5, "a of the polynomial weighting")
    staleness_hinge_a: float = setting(10.0, "a of the hinge weighting")
    staleness_hinge_b: int = setting(4, "b of the hinge weighting (server steps)")
    max_staleness: int | None = setting(
        None, "refuse (and record) updates more than this many server steps stale"
    )
    one_update_per_step: bool = setting(
        False,
        "a client whose update waits in the buffer gets no new task before the step "
        "(always on under DP or a secure sum)",
    )

    def __post_init__(self) -> None:
        self.buffer_config()

    def buffer_config(self) -> BufferConfig:
        """The loop's settings (checked: K <= concurrency, a bound >= 0)."""
        with qualified():
            rule = StalenessRule(
                self.staleness,
                self.staleness_exponent,
                self.staleness_hinge_a,
                self.staleness_hinge_b,
            )
            return BufferConfig(
                self.buffer_size,
                self.concurrency,
                rule,
                self.max_staleness,
                self.one_update_per_step,
            )


@dataclass(frozen=True)
class ClockSettings:
    """``[clock]``: simulated device speeds (``fedstream.simulation.clock``), so runs are
    compared at equal simulated time (``sim_time_s``)."""

    speeds: str = setting(
        "none",
        "compute time per example of each device: none (no clock; constant in an "
        "asynchronous run), constant, lognormal (heavy-tailed), pareto",
    )
    seconds_per_example: float = setting(0.01, "mean compute time per example per epoch (s)")
    speed_sigma: float = setting(1.0, "lognormal: σ of the log of the time per example")
    speed_shape: float = setting(1.5, "pareto: shape α > 1 (≤ 2: infinite variance)")
    latency_s: float = setting(0.0, "fixed time per task for download and upload (s)")
    online_s: float = setting(
        0.0,
        "mean online period of a device (s, exponential); 0: always online. With it, "
        "offline_s is the mean offline period",
    )
    offline_s: float = setting(0.0, "mean offline period of a device (s, exponential)")
    trace: str | None = setting(
        None,
        'a JSON file of each client\'s {"seconds_per_example": s, "online": [[start, end], '
        "…]} (either key for every client), instead of drawing them",
    )

    def __post_init__(self) -> None:
        checks.one_of("clock.speeds", self.speeds, list(SPEEDS))
        checks.positive("clock.seconds_per_example", self.seconds_per_example)
        checks.positive("clock.speed_sigma", self.speed_sigma)
        if not (math.isfinite(self.speed_shape) and self.speed_shape > 1):
            raise ConfigError("clock.speed_shape", self.speed_shape, "a number > 1")
        checks.non_negative("clock.latency_s", self.latency_s)
        checks.non_negative("clock.online_s", self.online_s)
        checks.non_negative("clock.offline_s", self.offline_s)
        if (self.online_s > 0) != (self.offline_s > 0):
            raise ConfigError(
                "clock.offline_s" if self.online_s > 0 else "clock.online_s",
                self.offline_s if self.online_s > 0 else self.online_s,
                "a number > 0 with the other (online and offline periods go together)",
            )
        if self.trace is not None and self.online_s > 0:
            raise ConfigError(
                "clock.online_s", self.online_s, "0 with clock.trace (the trace says when)"
            )


@dataclass(frozen=True)
class StreamSettings:
    """``[stream]``: client data that arrives while the run goes on (``data.stream``), on
    the simulated clock; off while ``window`` is 0."""

    window: int = setting(0, "examples a task trains on: the client's newest (0: no stream)")
    horizon_s: float = setting(
        100.0, "simulated seconds over which each client's training examples arrive"
    )
    drift: str = setting("none", "concept drift: none, shift (label y becomes y + 1 mod classes)")
    drift_at_s: float = setting(50.0, "when the drift happens (simulated s)")

    def __post_init__(self) -> None:
        checks.non_negative_int("stream.window", self.window)
        check_timing(self.horizon_s, self.drift, self.drift_at_s)
        if self.drift != "none" and self.window == 0:
            raise ConfigError(
                "stream.drift", self.drift, "'none' without a stream (stream.window 0)"
            )


SECTIONS: dict[str, type[Any]] = {
    "data": DataSettings,
    "model": ModelSettings,
    "strategy": StrategySettings,
    "client": ClientSettings,
    "run": RunSettings,
    "privacy": PrivacySettings,
    "secure": SecureSettings,
    "compression": CompressionSettings,
    "execution": ExecutionSettings,
    "attack": AttackSettings,
    "asynchronous": AsyncSettings,
    "clock": ClockSettings,
    "stream": StreamSettings,
}


@dataclass(frozen=True)
class SimulationConfig:
    """A simulated federated run, by concern (module docstring). The defaults are the
    out-of-the-box job: sklearn digits over 100 clients with Dirichlet(0.5) label skew, an
    MLP 64-64, FedAvg, 30 rounds of 20 clients."""

    data: DataSettings = field(default_factory=DataSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    strategy: StrategySettings = field(default_factory=StrategySettings)
    client: ClientSettings = field(default_factory=ClientSettings)
    run: RunSettings = field(default_factory=RunSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    secure: SecureSettings = field(default_factory=SecureSettings)
    compression: CompressionSettings = field(default_factory=CompressionSettings)
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)
    attack: AttackSettings = field(default_factory=AttackSettings)
    asynchronous: AsyncSettings = field(default_factory=AsyncSettings)
    clock: ClockSettings = field(default_factory=ClockSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)

    def __post_init__(self) -> None:
        with qualified():
            self.round_config()  # the round settings, checked together
        run, data = self.run, self.data
        if isinstance(run.clients_per_round, int) and run.clients_per_round > data.num_clients:
            raise ConfigError(
                "run.clients_per_round",
                run.clients_per_round,
                f"at most data.num_clients ({data.num_clients})",
            )
        if run.min_clients > data.num_clients:
            raise ConfigError(
                "run.min_clients", run.min_clients, f"at most data.num_clients ({data.num_clients})"
            )
        with qualified():
            strategy = self.build_strategy()
        self._check_combinations(strategy)

    def _check_combinations(self, strategy: Strategy) -> None:
        """Settings of different sections that cannot run together, each refused with why."""
        name, level = self.strategy.name, self.privacy.level
        corrected = {"scaffold": "SCAFFOLD", "feddyn": "FedDyn", "ditto": "Ditto"}
        if name in corrected and level == "sample":
            raise ConfigError(
                "privacy.level",
                "sample",
                f"'none', 'client' or 'local' with {corrected[name]} (its correction of each "
                "step is not part of DP-SGD's analysis)",
            )
        if name == "ditto" and self.run.personalize_epochs > 0:
            raise ConfigError(
                "run.personalize_epochs",
                self.run.personalize_epochs,
                "0 with Ditto (its clients evaluate their own personal models; fine-tuning "
                "the global one as well would report two models under one name)",
            )
        if name == "fedrep" and level == "sample":
            raise ConfigError(
                "privacy.level",
                "sample",
                "'none', 'client' or 'local' with FedRep (DP-SGD trains the whole model; it "
                "cannot leave the head or the body as it is)",
            )
        if name == "fednova" and self.strategy.aggregator != "mean":
            raise ConfigError(
                "strategy.aggregator",
                self.strategy.aggregator,
                "'mean' with FedNova (its step is the weighted mean step count times the "
                "normalised mean; a robust rule's estimate has no weights to take it with)",
            )
        if name == "fednova" and level != "none":
            raise ConfigError(
                "privacy.level",
                level,
                "'none' with FedNova (each update's step count travels beside it outside "
                "DP's clip and noise, and would tell the server how much data a client has; "
                "DP-SGD's steps are not the plain SGD steps it counts)",
            )
        if name == "scaffold" and self.compression.prune_fraction > 0:
            raise ConfigError(
                "compression.prune_fraction",
                self.compression.prune_fraction,
                "0 with SCAFFOLD (a pruned model sends only its kept weights, and the control "
                "variates have no such mask)",
            )
        secure = self.secure.backend()
        if isinstance(secure, SecAggConfig):
            per_step = (
                self.asynchronous.buffer_size
                if self.run.mode == "async"
                else self.clients_per_round_count()
            )
            with qualified():
                secure.resolve(per_step)
        if secure is not None and strategy.needs_individual_updates:
            raise ConfigError(
                "secure.scheme",
                self.secure.scheme,
                f"'none' with strategy.aggregator={self.strategy.aggregator!r}, which reads "
                "each client's update (a secure sum reveals only their total)",
            )
        if self.strategy.aggregator in ("krum", "multi_krum", "bulyan"):
            # the round's count is known here under fixed sampling; a round that ends with
            # fewer valid updates than the rule needs fails, naming the numbers
            rows = -(-self.clients_per_round_count() // self.strategy.bucket_size)  # buckets
            check_byzantine(self.strategy.aggregator, rows, self.strategy.byzantine)
        attack = self.attack.kind
        if attack in DATA_ATTACKS and self.model.app is None and self.data.dataset in REGRESSION:
            raise ConfigError(
                "attack.kind",
                attack,
                f"an update attack with the regression data set {self.data.dataset!r} "
                f"(label_flip and backdoor change class labels)",
            )
        if attack in UPDATE_ATTACKS and self.compression.codec != "none":
            raise ConfigError(
                "compression.codec",
                self.compression.codec,
                f"'none' with attack.kind={attack!r}: the simulated attackers rewrite the "
                "dense updates, which a codec encodes",
            )
        if attack in UPDATE_ATTACKS and self.secure.scheme != "none":
            raise ConfigError(
                "secure.scheme",
                self.secure.scheme,
                f"'none' with attack.kind={attack!r}: the simulated attackers rewrite the "
                "updates, which a secure sum keeps on the clients",
            )
        self._check_update_bounds()
        self.check_poisson_rounds()
        if self.run.mode == "async":
            self._check_asynchronous()
        if self.stream.window > 0:
            self._check_stream()
        privacy = self.privacy
        if isinstance(strategy, DifferentialPrivacy) and privacy.target_epsilon is not None:
            planned = strategy.epsilon_after(self.run.rounds)
            if planned > privacy.target_epsilon:
                raise ConfigError(
                    "privacy.target_epsilon",
                    privacy.target_epsilon,
                    f"at least {planned:.4g}, the ε (at δ={privacy.delta:g}) that "
                    f"{self.run.rounds} rounds spend at privacy.noise={privacy.noise:g}; raise "
                    "the noise or run fewer rounds",
                )

    def _check_stream(self) -> None:
        """What streaming client data needs: a clock to read the data by, the built-in
        data, the clients in this process, and class labels to drift."""
        clock = self.clock
        if (
            self.run.mode == "sync"
            and clock.speeds == "none"
            and clock.online_s == 0
            and (clock.trace is None)
        ):
            raise ConfigError(
                "stream.window",
                self.stream.window,
                "0 without a clock: set run.mode = 'async' or clock.speeds (a task reads "
                "its client's newest data at its simulated start time)",
            )
        if self.model.app is not None:
            raise ConfigError(
                "stream.window", self.stream.window, "0 with an app (its data does not stream yet)"
            )
        if self.execution.executor != "inprocess":
            raise ConfigError(
                "execution.executor",
                self.execution.executor,
                "'inprocess' with a stream (worker processes do not get it yet)",
            )
        if self.stream.drift != "none" and self.data.dataset in REGRESSION:
            raise ConfigError(
                "stream.drift",
                self.stream.drift,
                f"'none' with the regression data set {self.data.dataset!r} (it shifts labels)",
            )

    def _check_asynchronous(self) -> None:
        """What the buffered loop cannot run with yet (``rounds.buffered.check_buffered``
        refuses the same at run time), named under the settings' keys."""
        concurrency = self.asynchronous.concurrency
        if concurrency > self.data.num_clients:
            raise ConfigError(
                "asynchronous.concurrency",
                concurrency,
                f"at most data.num_clients ({self.data.num_clients})",
            )
        buffer = self.asynchronous.buffer_size
        if self.secure.scheme != "none" and self.asynchronous.staleness != "constant":
            raise ConfigError(
                "asynchronous.staleness",
                self.asynchronous.staleness,
                f"'constant' with secure.scheme={self.secure.scheme!r} (the server cannot "
                "scale an update it never sees)",
            )
        if self.secure.scheme != "none" and buffer < 2:
            raise ConfigError(
                "asynchronous.buffer_size", buffer, "at least 2 with a secure sum over it"
            )
        if self.privacy.level == "sample":
            raise ConfigError(
                "privacy.level",
                "sample",
                "'none', 'client' or 'local' with run.mode='async' (DP-SGD's accounting "
                "composes one task per client a round)",
            )
        holds_back = (
            self.asynchronous.one_update_per_step
            or self.privacy.level != "none"
            or self.secure.scheme != "none"
        )
        if holds_back and concurrency + buffer > self.data.num_clients:
            raise ConfigError(
                "asynchronous.concurrency",
                concurrency,
                f"at most data.num_clients - buffer_size ({self.data.num_clients - buffer}) "
                "with one update per client a step (on under DP or a secure sum): a client "
                "with an update in the buffer waits for the step",
            )
        if self.strategy.name in ROUND_ALGORITHMS:
            raise ConfigError(
                "strategy.name",
                self.strategy.name,
                "a strategy without round-bound client corrections with run.mode='async' "
                f"({', '.join(ROUND_ALGORITHMS)} assume every step's clients trained from "
                "one model)",
            )
        if self.client.straggler_fraction > 0:
            raise ConfigError(
                "client.straggler_fraction",
                self.client.straggler_fraction,
                "0 with run.mode='async' (slow devices are the clock's speeds there)",
            )

    def _check_update_bounds(self) -> None:
        """Bounds relative to the round cannot run with DP (whether one client's update is
        kept would depend on the others', which breaks the sum's sensitivity; the clip
        bound is the norm bound there) or with a secure sum (the server sees no update or
        weight, so it cannot compare them)."""
        relative = {
            "run.outlier_factor": self.run.outlier_factor or None,
            "run.max_client_weight": self.run.max_client_weight,
        }
        for key, value in relative.items():
            if value is None:
                continue
            if self.privacy.level != "none" and key == "run.outlier_factor":
                raise ConfigError(
                    key,
                    value,
                    f"0 or unset with privacy.level={self.privacy.level!r}: whether one "
                    "client's update is kept would depend on the others', which breaks DP's "
                    "sensitivity bound (the clip bound already bounds every update)",
                )
            if self.secure.scheme != "none":
                raise ConfigError(
                    key,
                    value,
                    f"unset with secure.scheme={self.secure.scheme!r}: the server never sees "
                    "a client's update or weight under a secure sum, so it cannot check them",
                )

    def clients_per_round_count(self) -> int:
        return sample_size(self.data.num_clients, self.run.clients_per_round, self.run.min_clients)

    def check_poisson_rounds(self) -> None:
        """Under Poisson sampling a round's size varies. An empty round is fine (it still
        steps), but one with fewer clients than ``run.min_clients``, or than the 2 a secure
        sum needs, fails the run. Refuse a run where that is likely (over 1 %)."""
        if self.client_sampling != "poisson":
            return
        needed = max(self.run.min_clients, 2 if self.secure.scheme != "none" else 1)
        if needed <= 1:
            return
        n = self.data.num_clients
        q = self.clients_per_round_count() / n
        short = sum(math.comb(n, j) * q**j * (1 - q) ** (n - j) for j in range(1, needed))
        chance = 1 - (1 - short) ** max(self.run.rounds, 1)
        if chance > 0.01:
            raise ConfigError(
                "run.sampling",
                self.client_sampling,
                f"'fixed', or more clients per round: under Poisson sampling at q = {q:.3g} "
                f"a round draws 1 to {needed - 1} of the {n} clients with probability "
                f"{short:.3g}, fewer than the {needed} a round needs "
                f"({'a secure sum' if self.secure.scheme != 'none' else 'run.min_clients'}), "
                f"so {self.run.rounds} rounds would fail with probability {chance:.0%}",
            )

    def build_strategy(self) -> Strategy:
        """The configured strategy, robust if the aggregator says so, wrapped in
        ``DifferentialPrivacy`` when privacy is on."""
        strategy = self.strategy.build()
        privacy = self.privacy
        if privacy.level == "none":
            return strategy
        if self.strategy.aggregator != "mean" and privacy.level == "client":
            raise ConfigError(
                "strategy.aggregator",
                self.strategy.aggregator,
                "'mean' with privacy.level='client': central DP's guarantee is for a noisy "
                "sum, and a robust rule replaces the sum (levels local and sample compose: "
                "their noise is added on the clients)",
            )
        per_round = self.clients_per_round_count()
        rate = per_round / self.data.num_clients
        if self.run.mode == "async":  # K updates a step, by speed: no amplification
            per_round, rate = self.asynchronous.buffer_size, 1.0
        return DifferentialPrivacy(
            strategy,
            level=typing.cast(DPLevel, privacy.level),
            noise_multiplier=privacy.noise,
            clip=privacy.clip,
            delta=privacy.delta,
            client_sampling_rate=rate,
            client_sampling=typing.cast(ClientSampling, self.client_sampling),
            clients=self.data.num_clients,
            adaptive_clip=privacy.adaptive_clip,
            target_quantile=privacy.target_quantile,
            clip_lr=privacy.clip_lr,
            clipped_count_stddev=(
                privacy.clipped_count_stddev
                if privacy.clipped_count_stddev is not None
                else per_round / 20
            ),
            example_sampling_rate=privacy.sampling_rate,
            local_steps=math.ceil(self.client.local_epochs / privacy.sampling_rate),
            target_epsilon=privacy.target_epsilon,
            secure_noise=privacy.secure_noise,
            accountant=typing.cast(AccountantMethod, privacy.accountant),
        )

    @property
    def client_metrics(self) -> str:
        """``privacy.client_metrics`` resolved to ``RoundConfig.client_metrics``."""
        wanted = self.privacy.client_metrics
        private = self.privacy.level != "none" or self.secure.scheme != "none"
        if wanted or (wanted is None and not private):
            return "clear"
        return "summed" if self.secure.scheme != "none" else "none"

    @property
    def client_sampling(self) -> str:
        """``run.sampling`` resolved: ``auto`` is Poisson when privacy is on. An
        asynchronous run's steps take whoever finished: fixed-size, not sampled."""
        if self.run.mode == "async":
            return "fixed"
        if self.run.sampling != "auto":
            return self.run.sampling
        return "poisson" if self.privacy.level != "none" else "fixed"

    @property
    def run_name(self) -> str:
        """The data (or app) and strategy, for a run folder's name: ``digits-fedavg``."""
        app = self.model.app
        data = self.data.dataset if app is None else app.partition(":")[0].rpartition(".")[2]
        return f"{data}-{self.strategy.name}"

    @property
    def label(self) -> str:
        """The strategy as a person names it, e.g. ``fedavg + DP (client)``, or
        ``fedavg (FedBuff, K = 10)`` in an asynchronous run."""
        parts = [self.strategy.name]
        if self.run.mode == "async":
            size = self.asynchronous.buffer_size
            parts[0] += " (FedAsync)" if size == 1 else f" (FedBuff, K = {size})"
        if self.strategy.aggregator != "mean":
            parts.append(self.strategy.aggregator)
        if self.privacy.level != "none":
            parts.append(f"DP ({self.privacy.level})")
        if self.secure.scheme != "none":
            parts.append(SECURE_SUMS[self.secure.scheme])
        if self.compression.codec != "none":
            parts.append(self.compression.codec)
        label = " + ".join(parts)
        if self.attack.kind != "none":
            label += f" vs {self.attack.kind} ({self.attack.fraction:.0%})"
        return label

    def outlier_factor(self, deployed: bool) -> float | None:
        """``run.outlier_factor`` resolved: unset is 10 in a deployment, whose clients the
        server does not control, and off in a simulation, whose clients are the user's own
        code; off under DP or a secure sum (see ``_check_combinations``)."""
        factor = self.run.outlier_factor
        if factor is None:
            shielded = self.privacy.level != "none" or self.secure.scheme != "none"
            factor = DEPLOYED_OUTLIER_FACTOR if deployed and not shielded else 0
        return factor or None

    def round_config(self, deployed: bool = False) -> RoundConfig:
        """The round settings; ``deployed``: for a server whose clients are remote."""
        run, client, compression = self.run, self.client, self.compression
        return RoundConfig(
            clients_per_round=run.clients_per_round,
            min_clients=run.min_clients,
            sampling=self.client_sampling,
            client_metrics=typing.cast(ClientMetrics, self.client_metrics),
            local_epochs=client.local_epochs,
            batch_size=client.batch_size,
            lr=client.lr,
            evaluate_fraction=run.evaluate_fraction,
            evaluate_every=run.evaluate_every,
            max_update_norm=run.max_update_norm,
            max_client_weight=run.max_client_weight,
            outlier_factor=self.outlier_factor(deployed),
            secure_aggregation=self.secure.backend(),
            compression=compression.uplink(),
            broadcast=compression.broadcast,
            prune_fraction=compression.prune_fraction,
            prune_structured=compression.prune_structured,
            personalize_epochs=run.personalize_epochs,
        )

    def task_policy(self) -> Stragglers | None:
        """The simulated devices' systems heterogeneity, as the round loop's task policy."""
        if self.client.straggler_fraction == 0:
            return None
        return Stragglers(self.client.straggler_fraction, self.client.drop_stragglers)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every setting, by section (a strategy's hyperparameters inline in its section)."""
        return {name: section_dict(getattr(self, name)) for name in SECTIONS}

    def to_toml(self) -> str:
        """This config as a run file: a table per section; unset values left out."""
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
            lines.append("")
        return "\n".join(lines)

    def with_changes(self, **sections: Mapping[str, Any]) -> SimulationConfig:
        """A copy with each named section's settings changed (and validated), e.g.
        ``with_changes(run={"rounds": 5})``; a key the section lacks is an error."""
        return from_mapping(merge(self.to_dict(), sections), source="override")


# -- keys, old names, conversion ------------------------------------------------------------


def section_dict(section: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if f.name == "hyperparameters":
            values |= dict(value)
        else:
            values[f.name] = list(value) if isinstance(value, tuple) else value
    return values


def merge(base: Mapping[str, Any], changes: Mapping[str, Any], source: str = "") -> dict[str, Any]:
    """``base`` with each section of ``changes`` (from ``source``, for errors) laid over its
    own; sections are mappings."""
    merged = {name: dict(values) for name, values in base.items()}
    for name, values in changes.items():
        if not isinstance(values, Mapping):
            where = f"{source}.{name}" if source else name
            raise ConfigError(where, values, _placement(name, values))
        merged.setdefault(name, {}).update(values)
    return merged


def hyperparameters_of(strategy: str) -> dict[str, dataclasses.Field[Any]]:
    """The hyperparameters strategy ``strategy`` declares: its dataclass fields."""
    return {f.name: f for f in dataclasses.fields(STRATEGIES[strategy])}


def all_hyperparameters() -> dict[str, str]:
    """Every hyperparameter any strategy declares, with the help of the first to declare it
    and the strategies that take it."""
    found: dict[str, tuple[str, list[str]]] = {}
    for name in STRATEGIES:
        for key, f in hyperparameters_of(name).items():
            _, takers = found.setdefault(key, (f.metadata.get("help", key), []))
            takers.append(name)
    return {key: f"{text} ({', '.join(takers)})" for key, (text, takers) in found.items()}


def keys() -> dict[str, str]:
    """Every valid key (``section.field``) with its help."""
    out: dict[str, str] = {}
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            if f.name != "hyperparameters":
                out[f"{name}.{f.name}"] = f.metadata.get("help", f.name)
    out |= {f"strategy.{k}": text for k, text in all_hyperparameters().items()}
    return out


RENAMED = {
    "model": "model.name", "hidden": "model.hidden", "app": "model.app",
    "strategy": "strategy.name", "dp": "privacy.level", "dp_noise": "privacy.noise",
    "dp_clip": "privacy.clip", "dp_delta": "privacy.delta",
    "dp_adaptive_clip": "privacy.adaptive_clip", "dp_target_quantile": "privacy.target_quantile",
    "dp_clip_lr": "privacy.clip_lr", "dp_clipped_count_stddev": "privacy.clipped_count_stddev",
    "dp_sampling_rate": "privacy.sampling_rate", "dp_target_epsilon": "privacy.target_epsilon",
    "dp_secure_noise": "privacy.secure_noise", "dp_accountant": "privacy.accountant",
    "secure_aggregation": "secure.scheme", "secagg_neighbours": "secure.neighbours",
    "secagg_threshold": "secure.threshold", "secagg_fraction_bits": "secure.fraction_bits",
    "secagg_max_abs": "secure.max_abs", "compression": "compression.codec",
}  # fmt: skip
"""Settings of the old flat configuration whose name changed, and their new key."""


def flat_names() -> dict[str, str]:
    """Every old flat name (``mu``, ``dp_noise``) → its key now (``strategy.mu``,
    ``privacy.noise``): for the errors that tell an old config file what to write."""
    names: dict[str, str] = {}
    for key in keys():  # the first section's wins: ``alpha`` was data.alpha before FedDyn's
        if not key.endswith(".name"):
            names.setdefault(key.rpartition(".")[2], key)
    return names | RENAMED


def _nearest(key: str, options: Any) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _placement(key: str, value: Any) -> str:
    """What to write instead of a flat ``key = value``."""
    new = flat_names().get(key)
    if new is None:
        return f"a section among {list(SECTIONS)}{_nearest(key, SECTIONS)}"
    section, _, name = new.partition(".")
    return (
        f"the key {new!r} now (the old flat form; in TOML write it under [{section}] as "
        f"{name} = {value!r}, as a flag --{new.replace('_', '-')}, in Python "
        f"{section}={{{name!r}: {value!r}}})"
    )


class qualified:
    """Context manager: a ``ConfigError`` raised under an old flat name by a setting's
    own checks (``lr``, ``dp_clip``) is raised again under its key (``client.lr``)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if isinstance(error, ConfigError) and "." not in error.field:
            key = flat_names().get(error.field)
            if key is not None:
                raise ConfigError(key, error.value, error.expected) from None


def field_types(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(key: str, value: Any) -> Any:
    """Convert ``value`` (from TOML, or a CLI string) to the type of setting ``key``
    (``section.field``)."""
    section, _, name = key.partition(".")
    cls = SECTIONS[section]
    types_ = field_types(cls)
    if name in types_ and name != "hyperparameters":
        return _coerce_to(key, types_[name], value)
    owners = [c for c in STRATEGIES.values() if name in hyperparameters_of(c.name)]
    if section == "strategy" and owners:  # a strategy's hyperparameter: its own type
        return _coerce_to(key, field_types(owners[0])[name] | None, value)
    return _coerce_to(key, float | int | bool | str | None, value)


def _coerce_to(key: str, kind: Any, value: Any) -> Any:
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in options:
        return None
    if isinstance(value, str) and value.lower() == "none" and type(None) in options:
        return None
    tuples = [option for option in options if typing.get_origin(option) is tuple]
    if tuples:
        parts = value.split(",") if isinstance(value, str) else value
        if typing.get_args(tuples[0])[0] is str:
            if not isinstance(parts, list | tuple) or not all(isinstance(p, str) for p in parts):
                raise ConfigError(key, value, "a list of names such as fc2,out")
            return tuple(p.strip() for p in parts if p.strip())
        try:
            return tuple(int(p) for p in parts if str(p).strip() != "")
        except (TypeError, ValueError):
            raise ConfigError(key, value, "a list of integers such as 64,64") from None
    for option in options:
        if option is type(None):
            continue
        converted = _convert(value, option)
        if converted is not None:
            return converted
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(key, value, names)


def _convert(value: Any, target: type) -> Any:
    """``value`` as ``target`` if it is one without loss, else ``None``."""
    if isinstance(value, bool):
        return value if target is bool else None
    if target is int:
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return None
    if target is float:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return None
        return None
    if target is str:
        return value if isinstance(value, str) else None
    if target is bool and isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def from_mapping(values: Mapping[str, Any], source: str = "config") -> SimulationConfig:
    """Build a validated config from settings by section (``{"strategy": {"mu": 0.01}}``,
    a TOML file's tables). An old flat key, an unknown section or an unknown key is an
    error that names what to write instead."""
    sections: dict[str, Any] = {}
    for section, table in values.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}.{section}", table, _placement(section, table))
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}.{section}", table, _placement(section, table))
        sections[section] = _section(section, table)
    return SimulationConfig(**sections)


def _section(section: str, table: Mapping[str, Any]) -> Any:
    cls = SECTIONS[section]
    own = {f.name for f in dataclasses.fields(cls)} - {"hyperparameters"}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in table.items():
        if key in own:
            values[key] = coerce(f"{section}.{key}", value)
        elif section == "strategy" and key in all_hyperparameters():
            extra[key] = coerce(f"{section}.{key}", value)
        else:
            moved = flat_names().get(key)
            hint = (
                f" (it is {moved!r})"
                if moved is not None and not moved.startswith(f"{section}.")
                else _nearest(
                    key, own | (set(all_hyperparameters()) if section == "strategy" else set())
                )
            )
            raise ConfigError(f"{section}.{key}", value, f"a setting of [{section}]{hint}")
    if section == "strategy":
        extra = {k: v for k, v in extra.items() if v is not None}
        values["hyperparameters"] = extra
    return cls(**values)


def dotted(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Settings given as ``section.field`` keys (flags), by section."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, dot, name = key.partition(".")
        if not dot:
            raise ConfigError(key, value, _placement(key, value))
        nested.setdefault(section, {})[name] = value
    return nested


def _read_toml(path: Path, field_name: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(field_name, str(path), "an existing TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(field_name, str(path), f"valid TOML ({exc})") from None


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML run file: a table per section."""
    return _read_toml(path, "--config")


PROJECT_FILE = "pyproject.toml"


def project_settings(folder: Path | None = None) -> dict[str, Any]:
    """The ``[tool.fedstream]`` table of the ``pyproject.toml`` in ``folder`` (the current
    one by default), as a Python project keeps its tools' settings; empty without one."""
    path = (folder or Path.cwd()) / PROJECT_FILE
    if not path.exists():
        return {}
    tool = _read_toml(path, PROJECT_FILE).get("tool", {})
    table = tool.get("fedstream", {}) if isinstance(tool, dict) else {}
    if not isinstance(table, dict):
        raise ConfigError(f"{PROJECT_FILE} [tool.fedstream]", table, "a table of settings")
    return dict(table)
