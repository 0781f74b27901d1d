"""DifferentialPrivacy's configuration: every refused setting names its field, value and
what was expected; the closed ends of the ranges are allowed; and what each level asks of
the clients (``configure_fit``)."""

import re

import numpy as np
import pytest

from fedstream import ClientUpdate, ConfigError, FedAvg, FedSGD, Params, ServerState
from fedstream.client.algorithms import CONTROL, join_extras
from fedstream.errors import PrivacyBudgetExceeded
from fedstream.privacy import DifferentialPrivacy
from fedstream.privacy.dp import privatize_update
from fedstream.strategies import Scaffold
from fedstream.strategies.robust import Robust
from fedstream.types import WITHIN_CLIP, ClientPrivacy, FitConfig, SampleDP, WeightedSum


def dp(**settings):
    return DifferentialPrivacy(settings.pop("inner", FedAvg()), **settings)


def refused(field_value: str, expected: str) -> str:
    """The whole message of a ConfigError, as a pattern."""
    return "^" + re.escape(f"{field_value} is invalid: expected {expected}") + "$"


OPEN = "a number in (0, 1)"
ROBUST = "fedavg+median"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"level": "global"}, refused("dp='global'", "one of ['client', 'local', 'sample']")),
        ({"accountant": "moments"}, refused("dp_accountant='moments'", "one of ['pld', 'rdp']")),
        (
            {"inner": Robust(FedAvg())},
            refused(
                f"strategy='{ROBUST}'",
                "a sum-based strategy with dp='client': the server's DP noise is added to "
                f"the sum, and {ROBUST} needs each client's update",
            ),
        ),
        ({"noise_multiplier": -1.0}, refused("dp_noise=-1.0", "a finite number >= 0")),
        ({"clip": 0.0}, refused("dp_clip=0.0", "a finite number > 0")),
        ({"delta": 0.0}, refused("dp_delta=0.0", OPEN)),
        ({"delta": 1.0}, refused("dp_delta=1.0", OPEN)),
        (
            {"client_sampling_rate": 0.0},
            refused("client_sampling_rate=0.0", "a number in (0, 1]"),
        ),
        ({"target_quantile": 1.5}, refused("dp_target_quantile=1.5", "a number in [0, 1]")),
        ({"clip_lr": -0.1}, refused("dp_clip_lr=-0.1", "a finite number >= 0")),
        (
            {"client_sampling": "strata"},
            refused("client_sampling='strata'", "one of ['fixed', 'poisson']"),
        ),
        ({"clients": -1}, refused("clients=-1", "an integer >= 0")),
        (
            {"client_sampling": "fixed"},
            refused("clients=0", "the number of clients sampled from, for fixed-size sampling"),
        ),
        (
            {"level": "local", "adaptive_clip": True},
            refused(
                "dp_adaptive_clip=True",
                "dp='client' (adaptive clipping is central); got dp='local'",
            ),
        ),
        (
            {"adaptive_clip": True},
            refused("dp_clipped_count_stddev=None", "a number > 0 when dp_adaptive_clip is on"),
        ),
        (
            {"adaptive_clip": True, "clipped_count_stddev": 0.5},
            refused(
                "dp_clipped_count_stddev=0.5",
                "more than dp_noise/2 = 0.5, so the clipped count does not use up the whole "
                "privacy budget",
            ),
        ),
        (
            {"level": "sample", "inner": FedSGD()},
            refused("strategy='fedsgd'", "a strategy whose clients train locally for dp='sample'"),
        ),
        (
            {"level": "sample", "example_sampling_rate": 0.0},
            refused("dp_sampling_rate=0.0", "a number in (0, 1]"),
        ),
        ({"target_epsilon": 0.0}, refused("dp_target_epsilon=0.0", "a finite number > 0")),
    ],
)
def test_refused_settings_name_field_value_and_expectation(settings, message):
    with pytest.raises(ConfigError, match=message):
        dp(**settings)


def test_the_allowed_edges():
    dp(client_sampling_rate=1.0, target_quantile=0.0, clip_lr=0.0, noise_multiplier=0.0)
    dp(target_quantile=1.0)
    dp(level="local", client_sampling="fixed")  # fixed-size sampling needs N only centrally
    dp(level="local", inner=Robust(FedAvg()))  # local noise: the server may see each update
    dp(level="sample", inner=Robust(FedAvg()))
    dp(adaptive_clip=True, clipped_count_stddev=0.6)
    dp(target_epsilon=2.0)


MODEL = Params({"w": np.zeros(2)})


def test_each_level_tells_the_clients_what_to_do():
    state = ServerState.initial(MODEL, seed=0)
    central = dp(noise_multiplier=1.5, clip=2.0, secure_noise=False).configure_fit(
        state, FitConfig()
    )
    assert central.privacy == ClientPrivacy(2.0, 0.0, False) and central.sample_dp is None
    local = dp(level="local", noise_multiplier=1.5, clip=2.0).configure_fit(state, FitConfig())
    assert local.privacy == ClientPrivacy(2.0, 1.5, True)
    sample = dp(level="sample", noise_multiplier=1.1, clip=0.5, example_sampling_rate=0.1,
                local_steps=7).configure_fit(state, FitConfig())  # fmt: skip
    assert sample.sample_dp == SampleDP(0.5, 1.1, 0.1, 7, True) and sample.privacy is None
    adapted = state.evolve(clip_norm=0.25)
    assert dp(clip=2.0).configure_fit(adapted, FitConfig()).privacy.clip == 0.25


def test_a_round_past_the_target_epsilon_is_refused_before_it_starts():
    strategy = dp(noise_multiplier=1.0, client_sampling_rate=0.5, target_epsilon=1.0)
    state = ServerState.initial(MODEL, seed=0).evolve(round=6)
    with pytest.raises(
        PrivacyBudgetExceeded, match=r"^round 7 failed: privacy budget: ε would rise from 0 to"
    ):
        strategy.configure_fit(state, FitConfig())
    assert dp(target_epsilon=100.0).configure_fit(state, FitConfig()).privacy is not None


def test_the_server_step_keeps_the_clip_and_passes_count_and_population_on():
    state = ServerState.initial(MODEL, seed=0).evolve(clip_norm=0.25)
    local = dp(level="local", secure_noise=False)
    assert local.server_update(state, WeightedSum(MODEL, 1.0, 1)).clip_norm == 0.25
    # SCAFFOLD inside noiseless client-level DP: the mean divides by q·N = 0.2·10 = 2, and
    # c moves by count/population = 2/10 of the mean Δc (as test_scaffold's step by hand)
    start = ServerState.initial(Params({"w": np.array([1.0, 2.0])}), seed=0)
    total = join_extras(
        Params({"w": np.array([0.4, -0.4])}), {CONTROL: Params({"w": np.array([2.0, 6.0])})}
    )
    scaffold = dp(inner=Scaffold(server_lr=0.5), noise_multiplier=0.0, client_sampling_rate=0.2)
    new = scaffold.server_update(start, WeightedSum(total, 2.0, count=2, population=10))
    np.testing.assert_allclose(new.params["w"], [1.1, 1.9])
    np.testing.assert_allclose(new.optimizer["c"]["w"], [0.2, 0.6])


def test_adaptive_clipping_reads_a_missing_count_of_clipped_clients_as_zero():
    adaptive = dp(adaptive_clip=True, clipped_count_stddev=5.0, secure_noise=False)
    state = ServerState.initial(MODEL, seed=3)
    silent = adaptive.server_update(state, WeightedSum(MODEL, 4.0, 4, population=4))
    zero = adaptive.server_update(
        state, WeightedSum(MODEL, 4.0, 4, extras={WITHIN_CLIP: 0.0}, population=4)
    )
    assert silent.clip_norm == zero.clip_norm != 1.0


def test_round_metrics_report_the_clip_only_where_there_is_one():
    state = ServerState.initial(MODEL, seed=0)
    assert dp(clip=2.0).round_metrics(state) == {"dp_epsilon": 0.0, "dp_clip": 2.0}
    assert dp(level="sample").round_metrics(state) == {"dp_epsilon": 0.0}


def test_an_update_exactly_at_the_clip_counts_as_within_it():
    update = ClientUpdate("c0", 1, Params({"w": np.array([3.0, 4.0])}), 7.0)
    at = privatize_update(update, ClientPrivacy(5.0), np.random.default_rng(0))
    assert at.extras[WITHIN_CLIP] == 0.5 and at.weight == 1.0
    over = privatize_update(update, ClientPrivacy(4.9), np.random.default_rng(0))
    assert over.extras[WITHIN_CLIP] == -0.5
