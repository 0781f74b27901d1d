"""DP-FedAvg (central, adaptive, local) and DP-SGD: the maths pinned, the wrapper's state in
and out, and whole runs through the real round loop and trainers."""

import json
import logging
import math

import numpy as np
import pytest
import torch

from fedstream import (
    ClientUpdate,
    ConfigError,
    FedAvg,
    FedSGD,
    FitConfig,
    FitTask,
    Params,
    PrivacyBudgetExceeded,
    ServerState,
    TorchTrainer,
    WeightedSum,
    run_round,
    run_rounds,
    simulate,
)
from fedstream.client.encode import prepare_upload
from fedstream.data.base import ClientData
from fedstream.privacy import (
    DEFAULT_ORDERS,
    DifferentialPrivacy,
    PrivacyLedger,
    discrete_gaussian_release,
    next_clip,
    privatize_update,
    update_noise_multiplier,
)
from fedstream.rounds import check_update
from fedstream.simulation import build
from fedstream.types import ClientPrivacy, SampleDP
from tests.settings import make_config, nested
from tests.strategies.test_wrappers import Halving, assert_sees_the_servers_state


def update(payload, weight=7.0):
    return ClientUpdate("c", 1, Params({"w": np.asarray(payload, dtype=np.float64)}), weight)


def test_privatize_clips_sets_unit_weight_and_flags_clipping():
    rng = np.random.default_rng(0)
    big = privatize_update(update([3.0, 4.0]), ClientPrivacy(clip=1.0), rng)
    np.testing.assert_allclose(big.payload["w"], [0.6, 0.8])
    assert big.weight == 1.0 and big.extras == {"within_clip": -0.5}
    small = privatize_update(update([0.3, 0.4]), ClientPrivacy(clip=1.0), rng)
    np.testing.assert_array_equal(small.payload["w"], [0.3, 0.4])
    assert small.extras == {"within_clip": 0.5}
    zero = privatize_update(update([0.0, 0.0]), ClientPrivacy(clip=1.0), rng)
    np.testing.assert_array_equal(zero.payload["w"], [0.0, 0.0])  # no division by a zero norm
    assert zero.extras == {"within_clip": 0.5}


def test_local_noise_has_std_z_times_clip_and_the_input_is_untouched():
    original = update(np.zeros(200_000))
    noisy = privatize_update(
        original, ClientPrivacy(clip=0.5, noise_multiplier=2.0), np.random.default_rng(1)
    )
    assert np.std(noisy.payload["w"]) == pytest.approx(1.0, rel=0.01)  # z·C = 2 × 0.5
    assert not original.payload["w"].any() and original.weight == 7.0


def test_local_noise_follows_the_clients_own_seed_not_the_tasks():
    private = ClientPrivacy(clip=1.0, noise_multiplier=1.0)
    first, _ = prepare_upload(update(np.zeros(8)), FitConfig(seed=5, privacy=private), noise_seed=9)
    other_task, _ = prepare_upload(
        update(np.zeros(8)), FitConfig(seed=6, privacy=private), noise_seed=9
    )
    assert first.payload.bit_equal(other_task.payload)  # the server's seed changes nothing
    other_device, _ = prepare_upload(
        update(np.zeros(8)), FitConfig(seed=5, privacy=private), noise_seed=10
    )
    assert not first.payload.bit_equal(other_device.payload)
    plain, _ = prepare_upload(update([1.0, 2.0]), FitConfig())
    assert plain.weight == 7.0 and plain.payload["w"][1] == 2.0
    # no seed of its own (a deployed client), or secure_noise: the OS CSPRNG, never repeated
    secure = FitConfig(privacy=ClientPrivacy(clip=1.0, noise_multiplier=1.0, secure_noise=True))
    for config, seed in ((FitConfig(seed=5, privacy=private), None), (secure, 9)):
        one, _ = prepare_upload(update(np.zeros(8)), config, noise_seed=seed)
        two, _ = prepare_upload(update(np.zeros(8)), config, noise_seed=seed)
        assert not one.payload.bit_equal(two.payload)


def test_adaptive_clipping_maths():
    # z = 1, σ_b = 1: z_Δ = (1 − 1/4)^(−1/2) = 1.154700538
    assert update_noise_multiplier(1.0, 1.0) == pytest.approx(1.154700538, rel=1e-9)
    assert update_noise_multiplier(0.0, 1.0) == 0.0
    with pytest.raises(ConfigError, match=r"dp_clipped_count_stddev=0.5 is invalid: expected more"):
        update_noise_multiplier(1.0, 0.5)
    # C = 1, b̄ = 0.8 > γ = 0.5, η = 0.2: C·e^(−0.06) = 0.941764534
    assert next_clip(1.0, 0.8, 0.5, 0.2) == pytest.approx(0.941764534, rel=1e-9)
    assert next_clip(2.0, 0.1, 0.5, 0.2) == pytest.approx(2 * math.exp(0.08), rel=1e-12)


def state_with(params, seed=3):
    return ServerState.initial(Params({"w": np.asarray(params, dtype=np.float64)}), seed)


def test_central_noise_is_z_times_clip_on_the_sum_and_the_state_carries_the_rest():
    dp = DifferentialPrivacy(
        FedAvg(), noise_multiplier=0.5, clip=2.0, client_sampling_rate=0.1, secure_noise=False
    )
    state = state_with(np.zeros(4))
    total = Params({"w": np.array([1.0, 2.0, 3.0, 4.0])})
    new = dp.server_update(state, WeightedSum(total, 4.0, 4, {"within_clip": 1.0}))
    # the same draw, replayed: the discrete Gaussian mechanism at z = 0.5, Δ = C = 2
    released = discrete_gaussian_release(total, 0.5, 2.0, state.generator())
    np.testing.assert_allclose(new.params["w"], released["w"] / 4, rtol=1e-12)
    assert np.std(released["w"] - total["w"]) > 0.1  # noise really was added
    assert new.accountant["client"].entries == ((0.5, 0.1, 1, 0),)
    assert new.rng_state != state.rng_state  # the draw moved the run's generator on
    assert new.clip_norm is None and state.accountant == {}  # fixed clip; old state untouched
    metrics = dp.round_metrics(new)
    assert metrics["dp_clip"] == 2.0
    assert metrics["dp_epsilon"] == PrivacyLedger().record(0.5, 0.1).epsilon(1e-5)


def test_adaptive_clip_follows_the_noisy_unclipped_fraction():
    dp = DifferentialPrivacy(
        FedAvg(), noise_multiplier=1.0, clip=1.0, adaptive_clip=True, clipped_count_stddev=2.0,
        secure_noise=False,
    )  # fmt: skip
    state = state_with(np.zeros(3))
    total = Params({"w": np.ones(3)})
    # 8 of 10 within the bound: the centred bits sum to 8·½ − 2·½ = 3
    new = dp.server_update(state, WeightedSum(total, 10.0, 10, {"within_clip": 3.0}))
    replay = state.generator()
    z_update = update_noise_multiplier(1.0, 2.0)
    released = discrete_gaussian_release(total, z_update, 1.0, replay)
    count = discrete_gaussian_release(3.0, 2 * 2.0, 0.5, replay)  # σ_b = 2 at sensitivity ½
    np.testing.assert_allclose(new.params["w"], released["w"] / 10, rtol=1e-12)
    assert new.clip_norm == pytest.approx(next_clip(1.0, count / 10 + 0.5, 0.5, 0.2))
    # the next round's clients are asked to clip at the new bound
    fit = dp.configure_fit(new, FitConfig())
    assert fit.privacy == ClientPrivacy(clip=new.clip_norm, secure_noise=False)


def test_local_and_sample_levels_record_their_own_ledgers():
    local = DifferentialPrivacy(FedAvg(), level="local", noise_multiplier=2.0, clip=1.0)
    state = state_with(np.zeros(2))
    aggregate = WeightedSum(Params({"w": np.array([2.0, 4.0])}), 2.0, 2)
    new = local.server_update(state, aggregate)
    np.testing.assert_array_equal(new.params["w"], [1.0, 2.0])  # no server noise
    assert new.accountant["local"].entries == ((1.0, 1.0, 1, 0),)  # z/2 at sensitivity 2C
    # the clients are asked for CSPRNG noise unless secure_noise is turned off
    assert local.configure_fit(state, FitConfig()).privacy == ClientPrivacy(1.0, 2.0, True)

    sample = DifferentialPrivacy(
        FedAvg(), level="sample", noise_multiplier=1.1, clip=0.7, example_sampling_rate=0.02,
        local_steps=50,
    )  # fmt: skip
    assert sample.configure_fit(state, FitConfig()).sample_dp == SampleDP(0.7, 1.1, 0.02, 50, True)
    assert sample.server_update(state, aggregate).accountant["sample"].entries == (
        (1.1, 0.02, 50, 0),
    )


def test_reported_epsilon_over_a_run_matches_dp_accounting():
    dp_accounting = pytest.importorskip("dp_accounting")
    logging.getLogger("absl").setLevel(logging.ERROR)
    result = simulate(
        **nested(
            num_clients=20,
            clients_per_round=5,
            rounds=6,
            local_epochs=1,
            dp="client",
            dp_noise=1.3,
            dp_clip=0.5,
            evaluate_every=1,
        )
    )
    epsilons = [r.metrics["dp_epsilon"] for r in result.reports]
    assert epsilons == sorted(epsilons) and epsilons[0] > 0
    reference = dp_accounting.rdp.RdpAccountant(list(DEFAULT_ORDERS))
    event = dp_accounting.PoissonSampledDpEvent(5 / 20, dp_accounting.GaussianDpEvent(1.3))
    reference.compose(dp_accounting.SelfComposedDpEvent(event, 6))
    assert epsilons[-1] == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)
    assert result.state.accountant["client"].entries == ((1.3, 0.25, 6, 0),)


def test_noise_free_client_dp_is_the_uniform_mean_of_clipped_deltas():
    config = make_config(
        num_clients=6,
        clients_per_round=6,
        partition="iid",
        local_epochs=1,
        rounds=1,
        trainer="sequential",
        dp="client",
        dp_noise=0.0,
        dp_clip=0.05,
        sampling="fixed",
    )
    setup = build(config)
    strategy = config.build_strategy()
    ids = sorted(setup.dataset.clients)
    new, report = run_round(setup.initial, strategy, setup.transport, ids, config.round_config())
    assert len(report.completed) == 6
    # replay: every client trains on its own, clips to 0.05, and the mean is unweighted
    fit = strategy.configure_fit(setup.initial, FitConfig(1, 10, config.client.lr))
    replay = setup.initial.generator()
    chosen = replay.choice(len(ids), size=6, replace=False)
    seeds = replay.integers(0, 2**63 - 1, size=6)
    trainer = TorchTrainer(setup.module, setup.dataset.task)
    deltas = []
    for index, seed in zip(chosen, seeds, strict=True):
        client = ids[int(index)]
        task = FitTask(client, 1, FitConfig(1, 10, config.client.lr, seed=int(seed)))
        raw = trainer.fit(setup.initial.params, task, setup.dataset.clients[client]).payload
        assert raw.norm() > 0.05  # every update really was clipped
        deltas.append(raw * (0.05 / raw.norm()))
    mean = sum(deltas[1:], deltas[0]) / 6
    got = new.params - setup.initial.params
    np.testing.assert_allclose(got.flat(), mean.flat(), atol=1e-6)
    assert fit.privacy == ClientPrivacy(0.05, secure_noise=True)


def test_server_rejects_updates_that_break_the_dp_contract():
    fit = FitConfig(privacy=ClientPrivacy(clip=1.0))
    like = Params({"w": np.zeros(2)})
    good = ClientUpdate(
        "a", 1, Params({"w": np.array([0.6, 0.8])}), 1.0, extras={"within_clip": 0.5}
    )
    assert check_update(good, like, 1, None, fit) is None
    heavy = ClientUpdate("a", 1, Params({"w": np.array([0.6, 0.8])}), 5.0)
    assert "weight=5.0 is invalid: expected 1 under client-level DP" in check_update(
        heavy, like, 1, None, fit
    )
    long = ClientUpdate("a", 1, Params({"w": np.array([3.0, 4.0])}), 1.0)
    assert "payload norm 5 exceeds the DP clip bound=1" in check_update(long, like, 1, None, fit)
    bad_extra = ClientUpdate("a", 1, good.payload, 1.0, extras={"within_clip": math.nan})
    assert "extras" in check_update(bad_extra, like, 1, None, fit)
    # a client that claims a bit of 50 would drag the adaptive bound: only ±½ is accepted
    dragging = ClientUpdate("a", 1, good.payload, 1.0, extras={"within_clip": 50.0})
    assert "extras['within_clip']=50.0 is invalid: expected -0.5 or 0.5" in check_update(
        dragging, like, 1, None, fit
    )
    # local DP: the update is noisy, so its norm is not bounded by the clip
    local = FitConfig(privacy=ClientPrivacy(clip=1.0, noise_multiplier=1.0))
    assert check_update(long, like, 1, None, local) is None


def test_a_run_given_a_target_epsilon_refuses_to_start_or_stops():
    with pytest.raises(
        ConfigError, match=r"privacy\.target_epsilon=1.0 is invalid: expected at least"
    ):
        make_config(dp="client", dp_noise=1.0, rounds=30, dp_target_epsilon=1.0)
    config = make_config(
        num_clients=10,
        clients_per_round=5,
        partition="iid",
        local_epochs=1,
        rounds=10,
        trainer="sequential",
        dp="client",
    )
    setup = build(config)
    base = config.build_strategy()
    assert isinstance(base, DifferentialPrivacy)
    target = (base.epsilon_after(3) + base.epsilon_after(4)) / 2  # room for 3 rounds, not 4
    strategy = DifferentialPrivacy(
        FedAvg(), noise_multiplier=1.0, client_sampling_rate=0.5, target_epsilon=target
    )
    states = []
    with pytest.raises(PrivacyBudgetExceeded, match="round 4 failed: privacy budget") as failure:
        for state, _ in run_rounds(
            setup.initial, strategy, setup.transport, sorted(setup.dataset.clients),
            config.round_config(), 10,
        ):  # fmt: skip
            states.append(state)
    assert len(states) == 3 and failure.value.spent <= target < failure.value.after
    assert states[-1].accountant["client"].epsilon(1e-5) == pytest.approx(base.epsilon_after(3))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dp": "global"}, r"privacy.level='global' is invalid: expected one of"),
        ({"dp": "client", "dp_clip": 0.0}, r"privacy\.clip=0\.0 is invalid"),
        ({"dp": "client", "dp_noise": -1.0}, r"privacy\.noise=-1\.0 is invalid"),
        (
            {"dp": "client", "dp_delta": 1.0},
            r"privacy\.delta=1\.0 is invalid: expected a number in",
        ),
        ({"dp": "client", "dp_delta": 0.0}, r"privacy\.delta=0\.0 is invalid"),
        ({"dp": "client", "dp_target_epsilon": 0.0}, r"privacy\.target_epsilon=0.0 is invalid"),
        ({"dp": "local", "dp_adaptive_clip": True}, r"privacy\.adaptive_clip=True is invalid"),
        (
            {"dp": "client", "dp_adaptive_clip": True, "dp_clipped_count_stddev": 0.1},
            r"privacy\.clipped_count_stddev=0\.1 is invalid",
        ),
        ({"dp": "sample", "strategy": "fedsgd"}, r"strategy\.name='fedsgd' is invalid"),
        ({"dp": "sample", "dp_sampling_rate": 0.0}, r"privacy\.sampling_rate=0\.0 is invalid"),
    ],
)
def test_bad_dp_settings_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        make_config(**changes)


def test_dp_sgd_step_is_the_mean_of_per_example_clipped_gradients():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    module = module.double()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)) * 3
    y = rng.integers(0, 2, size=6)
    data = ClientData(x, y, x[:0], y[:0])
    trainer = TorchTrainer(module, "classification")
    from fedstream.client.torch_trainer import params_from_module

    start = params_from_module(module)
    clip, lr = 0.3, 0.5
    # q = 1 and z = 0: one step is plain SGD on the mean of per-example clipped gradients
    dp = SampleDP(clip=clip, noise_multiplier=0.0, sampling_rate=1.0, steps=1)
    task = FitTask("c", 1, FitConfig(lr=lr, seed=1, sample_dp=dp))
    got = trainer.fit(start, task, data)
    expected = {n: np.zeros_like(a) for n, a in start.items()}
    norms = []
    for i in range(6):
        module.load_state_dict({n: torch.from_numpy(a.copy()) for n, a in start.items()})
        loss = torch.nn.functional.cross_entropy(
            module(torch.from_numpy(x[i : i + 1])), torch.from_numpy(y[i : i + 1])
        )
        grads = torch.autograd.grad(loss, list(module.parameters()))
        norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
        norms.append(norm)
        for (n, _), g in zip(module.named_parameters(), grads, strict=True):
            expected[n] += g.numpy() * min(1.0, clip / norm)
    assert max(norms) > clip  # some examples really were clipped
    for n in start:
        np.testing.assert_allclose(got.payload[n], -lr * expected[n] / 6, atol=1e-12)
    assert got.weight == 6.0 and got.metrics["loss"] > 0


def test_dp_sgd_noise_has_the_calibrated_spread():
    module = torch.nn.Linear(400, 50).double()
    torch.nn.init.zeros_(module.weight)
    torch.nn.init.zeros_(module.bias)
    x = np.zeros((100, 400))  # zero inputs: every per-example weight gradient is 0
    data = ClientData(x, np.zeros(100, dtype=np.int64), x[:0], np.zeros(0, dtype=np.int64))
    trainer = TorchTrainer(module, "classification")
    from fedstream.client.torch_trainer import params_from_module

    start = params_from_module(module)
    dp = SampleDP(clip=1.0, noise_multiplier=2.0, sampling_rate=0.1, steps=1)
    got = trainer.fit(start, FitTask("c", 1, FitConfig(lr=1.0, seed=4, sample_dp=dp)), data)
    # std of lr·N(0, (zC)²)/(q·n) = 2 / 10 = 0.2
    assert np.std(got.payload["weight"]) == pytest.approx(0.2, rel=0.02)


def test_dp_runs_end_to_end_report_epsilon_everywhere(tmp_path):
    result = simulate(
        output_dir=tmp_path,
        **nested(
            num_clients=20,
            clients_per_round=5,
            rounds=3,
            local_epochs=1,
            dp="sample",
            dp_noise=1.0,
            dp_sampling_rate=0.2,
        ),
    )
    epsilons = [r.metrics["dp_epsilon"] for r in result.reports]
    assert 0 < epsilons[0] < epsilons[1] < epsilons[2]
    steps = math.ceil(1 / 0.2)
    assert epsilons[2] == pytest.approx(PrivacyLedger().record(1.0, 0.2, 3 * steps).epsilon(1e-5))
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["final_metrics"]["dp_epsilon"] == epsilons[2]
    assert document["data"]["trainer"] == "sequential"
    assert "dp_epsilon" in (tmp_path / "metrics.csv").read_text().splitlines()[0]

    adaptive = simulate(
        **nested(
            num_clients=20,
            clients_per_round=10,
            rounds=3,
            local_epochs=1,
            dp="client",
            dp_adaptive_clip=True,
            dp_noise=0.5,
            dp_clip=0.01,
        )
    )
    clips = [r.metrics["dp_clip"] for r in adaptive.reports]
    assert 0.01 < clips[0] < clips[1] < clips[2]  # all clipped: the bound grows


def test_dp_composes_with_server_optimisers_and_rejects_fedsgd_for_dp_sgd():
    with pytest.raises(ConfigError, match="a strategy whose clients train locally"):
        DifferentialPrivacy(FedSGD(), level="sample")
    result = simulate(
        **nested(
            num_clients=10,
            clients_per_round=5,
            rounds=2,
            local_epochs=1,
            strategy="fedadam",
            dp="client",
            dp_noise=0.3,
        )
    )
    assert "m" in result.state.optimizer and result.state.accountant["client"].entries
    assert result.config.label == "fedadam + DP (client)"


def test_pld_accounting_is_tighter_than_rdp_and_selectable_per_run():
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting.pld.pld_privacy_accountant import PLDAccountant

    logging.getLogger("absl").setLevel(logging.ERROR)
    ledger = PrivacyLedger().record(1.0, 0.2, 30)
    rdp, pld = ledger.epsilon(1e-5), ledger.epsilon(1e-5, method="pld")
    assert rdp == pytest.approx(8.9393, abs=1e-4)
    # pinned against dp-accounting's own PLD accountant, composed here independently
    reference = PLDAccountant()
    event = dp_accounting.PoissonSampledDpEvent(0.2, dp_accounting.GaussianDpEvent(1.0))
    reference.compose(dp_accounting.SelfComposedDpEvent(event, 30))
    assert pld == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)
    assert pld == pytest.approx(7.93, abs=0.01) and pld < rdp
    result = simulate(
        **nested(
            num_clients=10,
            clients_per_round=2,
            rounds=2,
            local_epochs=1,
            dp="client",
            dp_accountant="pld",
            evaluate_every=0,
        )
    )
    expected = PrivacyLedger().record(1.0, 0.2, 2).epsilon(1e-5, method="pld")
    assert result.final_metrics["dp_epsilon"] == pytest.approx(expected)
    with pytest.raises(ConfigError, match=r"privacy\.accountant='moments' is invalid"):
        make_config(dp="client", dp_accountant="moments")


@pytest.mark.parametrize("codec", ["q8", "q4", "qsgd:4", "topk:0.1+q8"])
def test_central_dp_runs_with_every_quantiser_and_no_update_is_refused(codec):
    result = simulate(
        **nested(
            num_clients=6, clients_per_round=4, rounds=2, local_epochs=1, dp="client",
            dp_noise=0.5, dp_clip=0.05, compression=codec, evaluate_every=0,
        )
    )  # fmt: skip
    assert result.config.round_config().sampling == "poisson"  # DP's default
    for report in result.reports:  # every sampled client's update was accepted
        assert report.completed == report.sampled and not report.failures
    assert result.final_metrics["dp_epsilon"] > 0


def test_a_whole_local_dp_run_noises_every_update_and_reports_its_epsilon():
    settings = dict(num_clients=10, clients_per_round=4, rounds=2, local_epochs=1,
                    evaluate_every=0, dp_secure_noise=False)  # fmt: skip
    plain = simulate(**nested(**settings))
    local = simulate(**nested(**settings, dp="local", dp_noise=0.8, dp_clip=0.5))
    again = simulate(**nested(**settings, dp="local", dp_noise=0.8, dp_clip=0.5))
    assert local.state.params.is_finite() and not local.state.params.bit_equal(plain.state.params)
    assert local.state.params.bit_equal(again.state.params)  # seeded from the devices' secret
    # each client's own release, twice at most: no amplification by sampling (a client
    # knows it was asked), and z / 2, since replacing its data moves its release by 2·clip
    assert local.state.accountant["local"].entries == ((0.4, 1.0, 2, 0),)
    expected = PrivacyLedger().record(0.4, 1.0, 2).epsilon(1e-5)
    assert local.final_metrics["dp_epsilon"] == pytest.approx(expected)
    # each client's release moves the model by about z · clip / count per entry: far more
    # than the plain run's rounds do between them
    moved = (local.state.params - plain.state.params).flat()
    assert np.std(moved) > 0.8 * 0.5 / 4 / 3


def test_server_side_noise_from_the_csprng_differs_between_runs_of_one_seed():
    settings = dict(num_clients=10, clients_per_round=4, rounds=1, local_epochs=1,
                    evaluate_every=0, dp="client", dp_noise=1.0, dp_clip=0.5)  # fmt: skip
    secure = [simulate(**nested(**settings)).state.params for _ in range(2)]
    seeded = [simulate(**nested(**settings, dp_secure_noise=False)).state.params for _ in range(2)]
    assert not secure[0].bit_equal(secure[1])  # no seed, no checkpoint can redraw it
    assert seeded[0].bit_equal(seeded[1])  # reproducible only when asked to be


@pytest.mark.parametrize(("secure", "level"), [("secagg+", "local"), ("ckks", "sample")])
def test_secure_sums_compose_with_local_and_sample_level_dp(secure, level):
    settings = dict(num_clients=8, clients_per_round=8, rounds=1, local_epochs=1,
                    evaluate_every=0, dp=level, dp_noise=1.0, dp_clip=0.5,
                    dp_secure_noise=False, scheme=secure, trainer="sequential")  # fmt: skip
    result = simulate(**nested(**settings))
    report = result.reports[-1]
    assert len(report.completed) == 8 and report.failures == ()
    assert result.state.params.is_finite() and result.final_metrics["dp_epsilon"] > 0
    # the same release as without the secure sum, up to its fixed-point or CKKS rounding
    clear = simulate(**nested(**{**settings, "scheme": "none"}))
    np.testing.assert_allclose(result.state.params.flat(), clear.state.params.flat(), atol=0.1)


def test_a_strategy_under_dp_sees_the_servers_state():
    # a user's strategy whose client lr halves every round keeps doing so under DP
    assert_sees_the_servers_state(DifferentialPrivacy(Halving(), clip=1.0, noise_multiplier=0.5))
