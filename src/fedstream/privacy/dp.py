"""DP-FedAvg and its relatives as one wrapper over any sum-based strategy.

Three guarantees, each with its own ledger in ``ServerState.accountant``:

- ``client`` (central DP-FedAvg, McMahan et al. 2018): clients clip their update to L2 norm
  C and send it with weight 1; the server adds N(0, (z·C)²) to the sum. Adding or removing
  one client changes the sum by at most C, so each round is a sampled Gaussian mechanism
  with noise multiplier z and sampling rate q = clients per round / clients. With
  adaptive clipping (Andrew et al. 2021) C follows a target quantile of the update norms,
  learnt from a noisy sum of centred bits b − ½ (b = 1 when the update was within C). One
  client moves that sum by at most ½, the sensitivity the split of z between the two
  releases assumes (:func:`update_noise_multiplier`).
- ``local``: each client clips and adds N(0, (z·C)²) itself, so the server never sees an
  un-noised update. Any two updates differ by at most 2C, so each client's release is a
  Gaussian mechanism with multiplier z/2; the ledger records one such release per round, an
  upper bound for a client that takes part in every round.
- ``sample`` (DP-SGD on every client, Abadi et al. 2016): per-example clipping and noise in
  local training. Every client makes the same number of Poisson-sampled steps at the same
  rate, so one ledger entry per round bounds every example of every client that takes part
  in every round.

Client sampling is Poisson by default (each client joins a round independently with
probability q), which is what the accountant's analysis assumes, and the mean the inner
strategy sees is the noisy sum over the expected count q·N. With fixed-size sampling the
ledger entries carry N and ε is computed for sampling without replacement under the
replace-one relation (``privacy.accountant``), and the mean divides by the number of
clients aggregated, which the server chose. An inner
strategy that reads each update (a robust rule) composes with ``local`` and ``sample``,
whose noise is added on the clients (any aggregation of their releases is
post-processing), and is refused with ``client``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from fedstream import checks
from fedstream.errors import ConfigError, PrivacyBudgetExceeded
from fedstream.privacy.accountant import POISSON, AccountantMethod, Entry, PrivacyLedger
from fedstream.privacy.clipping import clip_l2
from fedstream.privacy.mechanisms import NoiseSource, SecureGenerator, discrete_gaussian_release
from fedstream.strategies.base import StrategyWrapper
from fedstream.types import (
    WITHIN_CLIP,
    ClientPrivacy,
    ClientUpdate,
    FitConfig,
    SampleDP,
    ServerState,
    WeightedSum,
)

DPLevel = Literal["client", "local", "sample"]
ClientSampling = Literal["poisson", "fixed"]
CLIENT_SAMPLINGS: tuple[ClientSampling, ...] = ("poisson", "fixed")
DP_LEVELS: tuple[DPLevel, ...] = ("client", "local", "sample")


def privatize_update(
    update: ClientUpdate, privacy: ClientPrivacy, rng: NoiseSource
) -> ClientUpdate:
    """The client's side of client-level DP: clip the payload to ``privacy.clip``, set the
    weight to 1, add local noise if asked, and report in ``extras[WITHIN_CLIP]`` the
    centred bit: +½ if the update was already within the bound, −½ if it was scaled down."""
    clipped, norm = clip_l2(update.payload, privacy.clip)
    payload = (  # any two clipped updates differ by 2C: multiplier z/2, noise z·C
        discrete_gaussian_release(clipped, privacy.noise_multiplier / 2, 2 * privacy.clip, rng)
        if privacy.noise_multiplier > 0
        else clipped
    )
    extras = {**update.extras, WITHIN_CLIP: 0.5 if norm <= privacy.clip else -0.5}
    return replace(update, payload=payload, weight=1.0, extras=extras)


def update_noise_multiplier(noise_multiplier: float, clipped_count_stddev: float) -> float:
    """The noise multiplier left for the update sum when a share of the privacy budget goes
    to the clipped count: z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) (Andrew et al. 2021, Thm 1), so the
    two releases together are one Gaussian mechanism with multiplier z."""
    checks.non_negative("dp_noise", noise_multiplier)
    checks.positive("dp_clipped_count_stddev", clipped_count_stddev)
    if noise_multiplier == 0:
        return 0.0
    if 2 * clipped_count_stddev <= noise_multiplier:
        raise ConfigError(
            "dp_clipped_count_stddev",
            clipped_count_stddev,
            f"more than dp_noise/2 = {noise_multiplier / 2:g}, so the clipped count does not "
            "use up the whole privacy budget",
        )
    return float((noise_multiplier**-2 - (2 * clipped_count_stddev) ** -2) ** -0.5)


def next_clip(clip: float, unclipped_fraction: float, target_quantile: float, lr: float) -> float:
    """Geometric update of the clip bound: C ← C·exp(−η·(b̄ − γ)) (Andrew et al. 2021), where
    b̄ is the (noisy) fraction of clients within C and γ the target quantile. It grows
    while fewer than γ of the updates fit and shrinks while more do."""
    return clip * math.exp(-lr * (unclipped_fraction - target_quantile))


@dataclass(frozen=True)
class DifferentialPrivacy(StrategyWrapper):
    """A strategy with differential privacy at ``level`` (module docstring).

    ``noise_multiplier`` is z; ``clip`` is C, the update bound (its start value under
    adaptive clipping) at the client levels and the per-example gradient bound at the
    sample level. ``client_sampling_rate`` is q for the client-level accountant, and
    ``client_sampling`` how the rounds sample (``RoundConfig.sampling``): ``"poisson"``
    (each of the ``clients`` joins with probability q; the mean divides by the expected
    count q·N, so the number who joined is not released) or ``"fixed"`` (round(q·N) of
    ``clients`` without replacement, accounted under the replace-one relation).
    ``example_sampling_rate`` and ``local_steps`` set DP-SGD's Poisson rate and steps per
    round. ε is reported at ``delta``; with ``target_epsilon`` a round that would spend more
    is refused before it starts. ``secure_noise`` (the default) draws all DP noise from
    the OS CSPRNG. Turned off, the server's noise comes from the run's seeded generator
    and the clients' from their simulated devices' secret: reproducible, for tests and
    benchmarks, and removable by anyone holding the seed or a checkpoint. ``accountant`` is
    ``"rdp"`` or the tighter and slower ``"pld"``.
    """

    level: DPLevel = "client"
    noise_multiplier: float = 1.0
    clip: float = 1.0
    delta: float = 1e-5
    client_sampling_rate: float = 1.0
    client_sampling: ClientSampling = "poisson"
    clients: int = 0
    adaptive_clip: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    clipped_count_stddev: float | None = None
    example_sampling_rate: float = 0.05
    local_steps: int = 20
    target_epsilon: float | None = None
    secure_noise: bool = True
    accountant: AccountantMethod = "rdp"

    def __post_init__(self) -> None:
        checks.one_of("dp", self.level, list(DP_LEVELS))
        checks.one_of("dp_accountant", self.accountant, ["rdp", "pld"])
        if self.inner.needs_individual_updates and self.level == "client":
            raise ConfigError(
                "strategy",
                self.inner.name,
                "a sum-based strategy with dp='client': the server's DP noise is added to "
                f"the sum, and {self.inner.name} needs each client's update",
            )
        checks.non_negative("dp_noise", self.noise_multiplier)
        checks.positive("dp_clip", self.clip)
        checks.in_unit_interval("dp_delta", self.delta, include_zero=False, include_one=False)
        checks.in_unit_interval(
            "client_sampling_rate",
            self.client_sampling_rate,
            include_zero=False,
            include_one=True,
        )
        checks.in_unit_interval(
            "dp_target_quantile", self.target_quantile, include_zero=True, include_one=True
        )
        checks.non_negative("dp_clip_lr", self.clip_lr)
        checks.one_of("client_sampling", self.client_sampling, list(CLIENT_SAMPLINGS))
        checks.non_negative_int("clients", self.clients)
        if self.client_sampling == "fixed" and self.level == "client" and self.clients == 0:
            raise ConfigError(
                "clients", 0, "the number of clients sampled from, for fixed-size sampling"
            )
        if self.adaptive_clip:
            if self.level != "client":
                raise ConfigError(
                    "dp_adaptive_clip",
                    True,
                    f"dp='client' (adaptive clipping is central); got dp={self.level!r}",
                )
            update_noise_multiplier(self.noise_multiplier, self.count_stddev)
        if self.level == "sample":
            SampleDP(self.clip, self.noise_multiplier, self.example_sampling_rate, self.local_steps)
            if self.inner.payload == "gradient":
                raise ConfigError(
                    "strategy",
                    self.inner.name,
                    "a strategy whose clients train locally for dp='sample'",
                )
        if self.target_epsilon is not None:
            checks.positive("dp_target_epsilon", self.target_epsilon)

    @property
    def count_stddev(self) -> float:
        """σ_b, the noise on the count of unclipped clients; by default 1/20 of the expected
        clients per round, Andrew et al.'s choice."""
        if self.clipped_count_stddev is not None:
            return self.clipped_count_stddev
        raise ConfigError(
            "dp_clipped_count_stddev", None, "a number > 0 when dp_adaptive_clip is on"
        )

    # the Strategy protocol where DP changes it (the rest is the inner strategy's)
    @property
    def name(self) -> str:
        return f"dp-{self.level}-{self.inner.name}"

    def release(self) -> Entry:
        """One round's entry in the ledger (``privacy.accountant.Entry``)."""
        if self.level == "client":
            population = self.clients if self.client_sampling == "fixed" else POISSON
            return self.noise_multiplier, self.client_sampling_rate, 1, population
        if self.level == "local":
            return self.noise_multiplier / 2, 1.0, 1, POISSON
        return self.noise_multiplier, self.example_sampling_rate, self.local_steps, POISSON

    def ledger(self, state: ServerState) -> PrivacyLedger:
        return state.accountant.get(self.level, PrivacyLedger())

    def epsilon_after(self, rounds: int, ledger: PrivacyLedger | None = None) -> float:
        """ε at ``delta`` once ``rounds`` more rounds are recorded on ``ledger``."""
        ledger = ledger or PrivacyLedger()
        noise, rate, steps, population = self.release()
        if rounds > 0:
            ledger = ledger.record(noise, rate, steps * rounds, population)
        return self.epsilon(ledger)

    def epsilon(self, ledger: PrivacyLedger) -> float:
        return ledger.epsilon(self.delta, method=self.accountant)

    def configure_fit(self, state: ServerState, fit: FitConfig) -> FitConfig:
        if self.target_epsilon is not None:
            spent = self.epsilon(self.ledger(state))
            after = self.epsilon_after(1, self.ledger(state))
            if after > self.target_epsilon:
                raise PrivacyBudgetExceeded(state.round + 1, spent, after, self.target_epsilon)
        fit = self.inner.configure_fit(state, fit)
        if self.level == "sample":
            return replace(
                fit,
                sample_dp=SampleDP(
                    self.clip,
                    self.noise_multiplier,
                    self.example_sampling_rate,
                    self.local_steps,
                    self.secure_noise,
                ),
            )
        local = self.noise_multiplier if self.level == "local" else 0.0
        clip = state.clip_norm if state.clip_norm is not None else self.clip
        return replace(fit, privacy=ClientPrivacy(clip, local, self.secure_noise))

    def server_update(self, state: ServerState, aggregate: WeightedSum) -> ServerState:
        rng: NoiseSource = SecureGenerator() if self.secure_noise else state.generator()
        clip = state.clip_norm if state.clip_norm is not None else self.clip
        new_clip = state.clip_norm
        if self.level == "client":
            noise = (
                update_noise_multiplier(self.noise_multiplier, self.count_stddev)
                if self.adaptive_clip
                else self.noise_multiplier
            )
            total = (
                discrete_gaussian_release(aggregate.total, noise, clip, rng)
                if noise > 0
                else aggregate.total
            )
            clients = self.denominator(aggregate)
            if self.adaptive_clip:
                centred = aggregate.extras.get(WITHIN_CLIP, 0.0)
                # one client moves the centred bits' sum by ½: multiplier 2σ_b
                noisy = discrete_gaussian_release(centred, 2 * self.count_stddev, 0.5, rng)
                new_clip = next_clip(
                    clip, noisy / clients + 0.5, self.target_quantile, self.clip_lr
                )
            aggregate = WeightedSum(
                total, clients, aggregate.count, aggregate.extras, None, aggregate.population
            )
        new_state = self.inner.server_update(state, aggregate)
        ledger = self.ledger(state).record(*self.release())
        changes: dict[str, object] = {
            "accountant": {**state.accountant, self.level: ledger},
            "clip_norm": new_clip,
        }
        if isinstance(rng, np.random.Generator):
            changes["rng_state"] = rng.bit_generator.state
        return new_state.evolve(**changes)

    def denominator(self, aggregate: WeightedSum) -> float:
        """What the noisy sum is divided by: under Poisson sampling the expected number of
        clients q·N (McMahan et al. 2018's fixed-denominator estimator, so how many joined
        stays private, and a round nobody joined still releases its noise); under
        fixed-size sampling the number aggregated, which the server chose."""
        if self.client_sampling == "poisson" and aggregate.population > 0:
            return self.client_sampling_rate * aggregate.population
        return float(max(aggregate.count, 1))

    def round_metrics(self, state: ServerState) -> Mapping[str, float]:
        """``dp_epsilon``: ε spent so far at ``delta``; ``dp_clip``: the clip bound the next
        round will use (client levels only)."""
        metrics = {
            **self.inner.round_metrics(state),
            "dp_epsilon": self.epsilon(self.ledger(state)),
        }
        if self.level != "sample":
            metrics["dp_clip"] = state.clip_norm if state.clip_norm is not None else self.clip
        return metrics
