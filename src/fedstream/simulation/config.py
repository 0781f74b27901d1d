"""``SimulationConfig``: every knob of a simulated run, flat, validated, TOML- and CLI-ready."""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedstream import checks
from fedstream.aggregation.robust import ROBUST_RULES
from fedstream.compression.codecs import Compression
from fedstream.data.datasets import DATASETS, NATURAL_ONLY, PARTITIONS, check_shakespeare_fraction
from fedstream.data.shakespeare import EDITIONS
from fedstream.errors import ConfigError
from fedstream.models import MODELS
from fedstream.privacy.accountant import AccountantMethod
from fedstream.privacy.dp import DP_LEVELS, DifferentialPrivacy, DPLevel
from fedstream.rounds import RoundConfig, sample_size
from fedstream.secure.he import CKKSConfig, HEConfig, PaillierConfig
from fedstream.secure.secagg import SecAggConfig
from fedstream.simulation.stragglers import Stragglers
from fedstream.strategies import STRATEGIES, make_strategy
from fedstream.strategies.base import Strategy
from fedstream.strategies.robust import Robust

SECURE_SUMS = {"secagg+": "SecAgg+", "ckks": "CKKS", "paillier": "Paillier"}

TRAINERS = ("auto", "sequential", "vectorized")
EXECUTORS = ("inprocess", "processes", "ray")

HELP: dict[str, str] = {
    "dataset": f"data set: {', '.join(DATASETS)}",
    "num_clients": "number of clients the data is split over",
    "partition": f"how data is split: {', '.join(PARTITIONS)} "
    "(default: natural for synthetic and shakespeare, else dirichlet)",
    "alpha": "Dirichlet concentration for label skew (smaller = more skew)",
    "shards_per_client": "shards partition: label-sorted shards per client",
    "quantity_sigma": "quantity partition: σ of the lognormal client sizes",
    "heldout_fraction": "share of the data held out for centralised evaluation",
    "client_test_fraction": "share of each client's data kept as its local test split",
    "synthetic_alpha": "Synthetic(α, β): how much client models differ",
    "synthetic_beta": "Synthetic(α, β): how much client data differ",
    "synthetic_samples": "Synthetic: examples per client (default: the paper's lognormal sizes)",
    "shakespeare_source": "folder of the Shakespeare texts (default: fetched into the cache)",
    "shakespeare_edition": f"Shakespeare edition: {', '.join(EDITIONS)}",
    "shakespeare_fraction": "Shakespeare: build the data as LEAF's paper experiment does "
    "(sample roles until this fraction of all windows, drop roles under 64, split windows at "
    "random; LEAF used 0.05); replaces num_clients",
    "model": f"model: {', '.join(MODELS)}",
    "app": "your own model, data and training: an App at package.module:attribute "
    "(replaces the data and model settings)",
    "local_batchnorm": "FedBN: every BatchNorm layer's weights and statistics stay on each "
    "client (else its statistics are averaged with the weights)",
    "hidden": "hidden widths: MLP layers (64,64), CNN channels (16,32), LSTM layers (256,256)",
    "strategy": f"federated strategy: {', '.join(STRATEGIES)}",
    "server_lr": "server learning rate (strategy default if unset)",
    "mu": "FedProx proximal coefficient μ",
    "momentum": "FedAvgM server momentum β",
    "beta1": "FedAdam/FedYogi/FedAdagrad first-moment decay β1",
    "beta2": "FedAdam/FedYogi second-moment decay β2",
    "tau": "FedAdam/FedYogi/FedAdagrad adaptivity τ",
    "aggregator": "mean (the weighted sum), or a robust rule over each update: "
    "median, trimmed_mean",
    "trim_fraction": "trimmed_mean: share of values dropped at each end of every coordinate",
    "dp": "differential privacy: none, client (central DP-FedAvg), local (clients add the "
    "noise), sample (DP-SGD on every client)",
    "dp_noise": "DP noise multiplier z (noise std = z × clip)",
    "dp_clip": "DP clip bound: each update's L2 norm (client, local; start value when "
    "adaptive) or each example's gradient norm (sample)",
    "dp_delta": "DP δ at which ε is reported",
    "dp_adaptive_clip": "dp=client: move the clip bound to a quantile of the update norms "
    "(Andrew et al. 2021)",
    "dp_target_quantile": "adaptive clipping: share of updates meant to fit within the bound",
    "dp_clip_lr": "adaptive clipping: geometric learning rate of the bound",
    "dp_clipped_count_stddev": "adaptive clipping: noise std on the count of unclipped "
    "clients (default: clients per round / 20)",
    "dp_sampling_rate": "dp=sample: Poisson rate at which each example joins a local step; "
    "local steps per round = ceil(local_epochs / rate)",
    "dp_target_epsilon": "refuse to start (or stop) a run that would spend more than this ε",
    "dp_accountant": "how ε is computed: rdp, or pld (tighter, about 1 s per round, needs "
    "dp-accounting)",
    "dp_secure_noise": "draw DP noise from the OS CSPRNG (unpredictable, not reproducible)",
    "secure_aggregation": "how the server sums updates: none (plain), secagg+ (masking), "
    "ckks or paillier (homomorphic encryption); all but none show it only the sum",
    "secagg_neighbours": "SecAgg+: neighbours each client shares secrets with "
    "(default: min(clients per round − 1, 20))",
    "secagg_threshold": "SecAgg+: shares needed to recover a client (default: max(2, ⌈k/4⌉))",
    "secagg_fraction_bits": "SecAgg+: fixed-point fraction bits (quantisation step 2^-bits)",
    "secagg_max_abs": "SecAgg+: largest magnitude of weight × update entry a client may send",
    "he_preset": "CKKS parameters: n4096, n8192 or n16384 (ring degree; all 128-bit secure)",
    "paillier_key_bits": "Paillier modulus bits: 2048, 3072 or 4096",
    "paillier_fraction_bits": "Paillier: fixed-point fraction bits",
    "paillier_max_abs": "Paillier: largest magnitude of weight × update entry a client may send",
    "compression": "uplink codec: none, or a sparsifier topk:f, randk:f, threshold:τ (with "
    "error feedback) and/or a quantiser q8, q4, qsgd:s, joined by + (e.g. topk:0.01+q8)",
    "broadcast": "downlink codec for the global model: none, f16, q8",
    "prune_fraction": "share of each weight tensor pruned by magnitude after every round",
    "prune_structured": "prune whole output units (rows, filters) instead of single weights",
    "rounds": "number of rounds",
    "clients_per_round": "clients sampled per round: a count (20) or a fraction (0.2)",
    "min_clients": "minimum clients sampled and valid updates needed per round",
    "local_epochs": "local epochs per round",
    "batch_size": "local batch size (0 = full batch)",
    "lr": "client learning rate (SGD)",
    "max_update_norm": "reject updates whose L2 norm exceeds this",
    "straggler_fraction": "share of each round's clients that are stragglers",
    "drop_stragglers": "true: drop stragglers (FedAvg); false: keep their partial work (FedProx)",
    "evaluate_every": "federated and central evaluation every N rounds (0 = last only)",
    "evaluate_fraction": "fraction of all clients that evaluate (0 = none)",
    "personalize_epochs": "evaluating clients also adapt the global model for this many local "
    "epochs and report both (0 = off)",
    "trainer": "client trainer: auto (vectorized when the model allows), sequential, vectorized",
    "seed": "seed for data split, model initialisation, sampling and shuffling",
    "threads": "torch intra-op threads (per process)",
    "executor": "where clients train: inprocess (this process), processes (persistent worker "
    "processes on this machine), ray (Ray actors, on a cluster with --ray-address)",
    "workers": "worker processes or Ray actors (default: the cores available)",
    "ray_address": "address of a running Ray cluster (default: start a local one)",
}


@dataclass(frozen=True)
class SimulationConfig:
    """A simulated federated run. The defaults are the out-of-the-box job: sklearn digits
    over 100 clients with Dirichlet(0.5) label skew, an MLP 64-64, FedAvg, 30 rounds of 20
    clients. Strategy hyperparameters left ``None`` take the strategy's own defaults."""

    # data
    dataset: str = "digits"
    num_clients: int = 100
    partition: str | None = None
    alpha: float = 0.5
    shards_per_client: int = 2
    quantity_sigma: float = 1.0
    heldout_fraction: float = 0.2
    client_test_fraction: float = 0.2
    synthetic_alpha: float = 1.0
    synthetic_beta: float = 1.0
    synthetic_samples: int | None = None
    shakespeare_source: str | None = None
    shakespeare_edition: str = "modern"
    shakespeare_fraction: float | None = None
    # model
    model: str = "mlp"
    app: str | None = None
    local_batchnorm: bool = False
    hidden: tuple[int, ...] | None = None
    # strategy (server side)
    strategy: str = "fedavg"
    server_lr: float | None = None
    mu: float | None = None
    momentum: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    tau: float | None = None
    aggregator: str = "mean"
    trim_fraction: float = 0.1
    # differential privacy
    dp: str = "none"
    dp_noise: float = 1.0
    dp_clip: float = 1.0
    dp_delta: float = 1e-5
    dp_adaptive_clip: bool = False
    dp_target_quantile: float = 0.5
    dp_clip_lr: float = 0.2
    dp_clipped_count_stddev: float | None = None
    dp_sampling_rate: float = 0.05
    dp_target_epsilon: float | None = None
    dp_secure_noise: bool = False
    dp_accountant: str = "rdp"
    # secure aggregation
    secure_aggregation: str = "none"
    secagg_neighbours: int | None = None
    secagg_threshold: int | None = None
    secagg_fraction_bits: int = 24
    secagg_max_abs: float = 2.0**20
    he_preset: str = "n8192"
    paillier_key_bits: int = 2048
    paillier_fraction_bits: int = 16
    paillier_max_abs: float = 2.0**16
    # communication
    compression: str = "none"
    broadcast: str = "none"
    prune_fraction: float = 0.0
    prune_structured: bool = False
    # rounds and local training
    rounds: int = 30
    clients_per_round: int | float = 20
    min_clients: int = 1
    local_epochs: int = 5
    batch_size: int = 10
    lr: float = 0.3
    max_update_norm: float | None = None
    straggler_fraction: float = 0.0
    drop_stragglers: bool = True
    # evaluation
    evaluate_every: int = 1
    evaluate_fraction: float = 1.0
    personalize_epochs: int = 0
    # execution
    trainer: str = "auto"
    seed: int = 0
    threads: int = 1
    executor: str = "inprocess"
    workers: int | None = None
    ray_address: str | None = None

    def __post_init__(self) -> None:
        checks.one_of("dataset", self.dataset, list(DATASETS))
        checks.one_of("shakespeare_edition", self.shakespeare_edition, list(EDITIONS))
        check_shakespeare_fraction(self.dataset, self.shakespeare_fraction)
        checks.positive_int("shards_per_client", self.shards_per_client)
        checks.non_negative("quantity_sigma", self.quantity_sigma)
        checks.non_negative("synthetic_alpha", self.synthetic_alpha)
        checks.non_negative("synthetic_beta", self.synthetic_beta)
        if self.synthetic_samples is not None:
            checks.positive_int("synthetic_samples", self.synthetic_samples)
        checks.in_unit_interval(
            "heldout_fraction", self.heldout_fraction, include_zero=True, include_one=False
        )
        checks.in_unit_interval(
            "client_test_fraction", self.client_test_fraction, include_zero=True, include_one=False
        )
        checks.one_of("partition", self.split, list(PARTITIONS))
        checks.one_of("model", self.model, list(MODELS))
        checks.one_of("trainer", self.trainer, list(TRAINERS))
        checks.positive_int("num_clients", self.num_clients)
        checks.positive("alpha", self.alpha)
        for width in self.hidden or ():
            checks.positive_int("hidden", width)
        checks.non_negative_int("rounds", self.rounds)
        checks.non_negative_int("seed", self.seed)
        checks.positive_int("threads", self.threads)
        checks.one_of("executor", self.executor, list(EXECUTORS))
        if self.workers is not None:
            checks.positive_int("workers", self.workers)
        if self.ray_address is not None and self.executor != "ray":
            raise ConfigError("ray_address", self.ray_address, "executor='ray' to be set with it")
        self.round_config()  # validates the round fields
        self.task_policy()  # and the simulated devices'
        if self.straggler_fraction > 0 and self.local_epochs < 2:
            raise ConfigError(
                "local_epochs", self.local_epochs, "at least 2 when there are stragglers"
            )
        if isinstance(self.clients_per_round, int) and self.clients_per_round > self.num_clients:
            raise ConfigError(
                "clients_per_round",
                self.clients_per_round,
                f"at most num_clients ({self.num_clients})",
            )
        if self.min_clients > self.num_clients:
            raise ConfigError(
                "min_clients", self.min_clients, f"at most num_clients ({self.num_clients})"
            )
        strategy = self.build_strategy()  # validates the strategy and its hyperparameters
        if self.strategy == "scaffold" and self.dp == "sample":
            raise ConfigError(
                "dp",
                "sample",
                "'none', 'client' or 'local' with SCAFFOLD (its correction of "
                "each step is not part of DP-SGD's analysis)",
            )
        if self.strategy == "scaffold" and self.prune_fraction > 0:
            raise ConfigError(
                "prune_fraction",
                self.prune_fraction,
                "0 with SCAFFOLD (a pruned model sends "
                "only its kept weights, and the control variates have no such mask)",
            )
        secure = self.round_config().secure_aggregation
        if isinstance(secure, SecAggConfig):
            secure.resolve(sample_size(self.num_clients, self.clients_per_round, self.min_clients))
        if secure is not None and strategy.needs_individual_updates:
            raise ConfigError(
                "secure_aggregation",
                self.secure_aggregation,
                f"'none' with aggregator={self.aggregator!r}, which reads each client's "
                "update (a secure sum reveals only their total)",
            )
        if isinstance(strategy, DifferentialPrivacy) and self.dp_target_epsilon is not None:
            planned = strategy.epsilon_after(self.rounds)
            if planned > self.dp_target_epsilon:
                raise ConfigError(
                    "dp_target_epsilon",
                    self.dp_target_epsilon,
                    f"at least {planned:.4g}, the ε (at δ={self.dp_delta:g}) that {self.rounds} "
                    f"rounds spend at dp_noise={self.dp_noise:g}; raise dp_noise or run fewer "
                    "rounds",
                )

    def build_strategy(self) -> Strategy:
        """The configured strategy, wrapped in ``DifferentialPrivacy`` when ``dp`` is on."""
        checks.one_of("strategy", self.strategy, list(STRATEGIES))
        strategy = make_strategy(
            self.strategy,
            server_lr=self.server_lr,
            mu=self.mu,
            momentum=self.momentum,
            beta1=self.beta1,
            beta2=self.beta2,
            tau=self.tau,
        )
        checks.one_of("aggregator", self.aggregator, ["mean", *ROBUST_RULES])
        checks.one_of("dp", self.dp, ["none", *DP_LEVELS])
        if self.aggregator != "mean":
            if self.dp == "client":
                raise ConfigError(
                    "aggregator",
                    self.aggregator,
                    "'mean' with dp='client': central DP's guarantee is for a noisy sum, "
                    "and a robust rule replaces the sum (dp='local' or 'sample' compose: "
                    "their noise is added on the clients)",
                )
            strategy = Robust(strategy, self.aggregator, self.trim_fraction)
        if self.dp == "none":
            return strategy
        per_round = sample_size(self.num_clients, self.clients_per_round, self.min_clients)
        checks.in_unit_interval(
            "dp_sampling_rate", self.dp_sampling_rate, include_zero=False, include_one=True
        )
        return DifferentialPrivacy(
            strategy,
            level=typing.cast(DPLevel, self.dp),
            noise_multiplier=self.dp_noise,
            clip=self.dp_clip,
            delta=self.dp_delta,
            client_sampling_rate=per_round / self.num_clients,
            adaptive_clip=self.dp_adaptive_clip,
            target_quantile=self.dp_target_quantile,
            clip_lr=self.dp_clip_lr,
            clipped_count_stddev=(
                self.dp_clipped_count_stddev
                if self.dp_clipped_count_stddev is not None
                else per_round / 20
            ),
            example_sampling_rate=self.dp_sampling_rate,
            local_steps=math.ceil(self.local_epochs / self.dp_sampling_rate),
            target_epsilon=self.dp_target_epsilon,
            secure_noise=self.dp_secure_noise,
            accountant=typing.cast(AccountantMethod, self.dp_accountant),
        )

    @property
    def run_name(self) -> str:
        """The data (or app) and strategy, for a run folder's name: ``digits-fedavg``."""
        data = self.dataset if self.app is None else self.app.partition(":")[0].rpartition(".")[2]
        return f"{data}-{self.strategy}"

    @property
    def label(self) -> str:
        """The strategy as a person names it, e.g. ``fedavg + DP (client)``."""
        parts = [self.strategy]
        if self.dp != "none":
            parts.append(f"DP ({self.dp})")
        if self.secure_aggregation != "none":
            parts.append(SECURE_SUMS[self.secure_aggregation])
        if self.compression != "none":
            parts.append(self.compression)
        return " + ".join(parts)

    def round_config(self) -> RoundConfig:
        return RoundConfig(
            clients_per_round=self.clients_per_round,
            min_clients=self.min_clients,
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            evaluate_fraction=self.evaluate_fraction,
            evaluate_every=self.evaluate_every,
            max_update_norm=self.max_update_norm,
            secure_aggregation=self.secure_sum(),
            compression=None if self.compression == "none" else Compression.parse(self.compression),
            broadcast=self.broadcast,
            prune_fraction=self.prune_fraction,
            prune_structured=self.prune_structured,
            personalize_epochs=self.personalize_epochs,
        )

    def task_policy(self) -> Stragglers | None:
        """The simulated devices' systems heterogeneity, as the round loop's task policy."""
        if self.straggler_fraction == 0:
            return None
        return Stragglers(self.straggler_fraction, self.drop_stragglers)

    def secure_sum(self) -> SecAggConfig | HEConfig | None:
        """The secure-sum backend's settings, or ``None`` for the plain sum."""
        checks.one_of("secure_aggregation", self.secure_aggregation, ["none", *SECURE_SUMS])
        if self.secure_aggregation == "secagg+":
            return SecAggConfig(
                neighbours=self.secagg_neighbours,
                threshold=self.secagg_threshold,
                fraction_bits=self.secagg_fraction_bits,
                max_abs=self.secagg_max_abs,
            )
        if self.secure_aggregation == "ckks":
            return CKKSConfig(preset=self.he_preset)
        if self.secure_aggregation == "paillier":
            return PaillierConfig(
                self.paillier_key_bits, self.paillier_fraction_bits, self.paillier_max_abs
            )
        return None

    @property
    def split(self) -> str:
        """The partition in force: as set, or the data set's natural one by default."""
        if self.partition is not None:
            return self.partition
        return "natural" if self.dataset in NATURAL_ONLY else "dirichlet"

    def data_kwargs(self) -> dict[str, Any]:
        """The arguments of ``fedstream.data.federate`` that this config sets."""
        return {
            "name": self.dataset,
            "num_clients": self.num_clients,
            "partition": self.split,
            "alpha": self.alpha,
            "shards_per_client": self.shards_per_client,
            "quantity_sigma": self.quantity_sigma,
            "heldout_fraction": self.heldout_fraction,
            "client_test_fraction": self.client_test_fraction,
            "synthetic_alpha": self.synthetic_alpha,
            "synthetic_beta": self.synthetic_beta,
            "synthetic_samples": self.synthetic_samples,
            "shakespeare_source": self.shakespeare_source,
            "shakespeare_edition": self.shakespeare_edition,
            "shakespeare_fraction": self.shakespeare_fraction,
        }

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields()}

    def with_changes(self, **changes: Any) -> SimulationConfig:
        """A copy with ``changes`` applied (and validated); unknown names are an error."""
        return from_mapping({**self.to_dict(), **changes}, source="override")


def fields() -> list[dataclasses.Field[Any]]:
    """The settings, in declaration order."""
    return list(dataclasses.fields(SimulationConfig))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(SimulationConfig)
    return {f.name: hints[f.name] for f in fields()}


def coerce(name: str, value: Any) -> Any:
    """Convert ``value`` (from TOML, or a CLI string) to the type of field ``name``."""
    kind = field_types()[name]
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in options:
        return None
    if isinstance(value, str) and value.lower() == "none" and type(None) in options:
        return None
    if any(typing.get_origin(option) is tuple for option in options):
        parts = value.split(",") if isinstance(value, str) else value
        try:
            return tuple(int(p) for p in parts if str(p).strip() != "")
        except (TypeError, ValueError):
            raise ConfigError(name, value, "a list of integers such as 64,64") from None
    for option in options:
        if option is type(None):
            continue
        converted = _convert(value, option)
        if converted is not None:
            return converted
    names = " or ".join(o.__name__ for o in options)
    raise ConfigError(name, value, names)


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
    """Build a validated config; an unknown key names the key and lists the known ones."""
    known = {f.name for f in fields()}
    for key in values:
        if key not in known:
            raise ConfigError(
                f"{source}.{key}", values[key], f"one of the settings {sorted(known)}"
            )
    return SimulationConfig(**{k: coerce(k, v) for k, v in values.items()})


def _read_toml(path: Path, field: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(field, str(path), "an existing TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(field, str(path), f"valid TOML ({exc})") from None


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML run file: settings at the top level (or under a ``[run]`` table)."""
    data = _read_toml(path, "--config")
    run = data.get("run", data)
    if not isinstance(run, dict):
        raise ConfigError("--config", str(path), "a table of settings")
    return dict(run)


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
