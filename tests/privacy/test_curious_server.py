"""The server as the attacker: each test plays one attack a curious or lying server can
make on the privacy guarantees, against the real code path, and checks that it fails while
the honest run still gives the right numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedstream import (
    ClientUpdate,
    ConfigError,
    FedAvg,
    FitConfig,
    FitTask,
    Params,
    ServerState,
    simulate,
)
from fedstream.client.base import Trainer
from fedstream.client.torch_trainer import TorchTrainer
from fedstream.privacy import (
    DifferentialPrivacy,
    SecureGenerator,
    clip_l2,
    privatize_update,
    update_noise_multiplier,
)
from fedstream.rounds import plan_round
from fedstream.simulation import SimulationConfig, build
from fedstream.simulation.config import from_mapping
from fedstream.types import WITHIN_CLIP
from tests.settings import nested

OLD_LOCAL_NOISE_STREAM = 0x4C4450  # the stream local-DP noise was once drawn in, from the task seed


def sent_updates(
    config_flat: dict[str, object], sections: dict[str, dict[str, object]] | None = None
) -> tuple[list[FitTask], list[ClientUpdate], object]:
    """One round's tasks as the server planned them and the updates it received."""
    config = from_mapping(nested(sections or {}, **config_flat))
    setup = build(config)
    ids = sorted(setup.dataset.clients)
    plan = plan_round(
        setup.initial, config.build_strategy(), ids, config.round_config(),
        setup.initial.generator(),
    )  # fmt: skip
    received = [d.result for d in setup.transport.fit(setup.initial.params, plan.tasks)]
    assert all(isinstance(u, ClientUpdate) for u in received)
    return list(plan.tasks), received, setup


def clean_update(trainer: Trainer, setup: object, task: FitTask, clip: float) -> Params:
    """What the client computed before its noise: the attacker's goal."""
    update = trainer.fit(setup.initial.params, task, setup.dataset.clients[task.client_id])  # type: ignore[attr-defined]
    return clip_l2(update.payload, clip)[0]


def test_the_server_cannot_redraw_and_subtract_local_dp_noise():
    flat = {
        "num_clients": 6, "clients_per_round": 3, "rounds": 1, "trainer": "sequential",
        "dp": "local", "dp_noise": 0.5, "dp_clip": 0.5, "dp_secure_noise": False,
    }  # fmt: skip
    tasks, received, setup = sent_updates(flat)
    trainer = TorchTrainer(setup.module, setup.dataset.task)  # type: ignore[attr-defined]
    for task, sent in zip(tasks, received, strict=True):
        truth = clean_update(trainer, setup, task, 0.5)
        # the attack: every seed the server chose and sent, in every stream it could guess
        for stream in (OLD_LOCAL_NOISE_STREAM, None):
            rng = np.random.default_rng(
                [task.config.seed, stream] if stream is not None else task.config.seed
            )
            guess = Params({n: rng.normal(0.0, 0.25, a.shape) for n, a in sent.payload.items()})
            recovered = sent.payload - guess
            # the guess is independent noise: what is left is √2·σ away per entry, not 0
            error = (recovered - truth).flat()
            assert np.std(error) > 0.3, "the server removed the client's noise"
        # and the client's own noise is really there, of the right size (σ = z·C = 0.25)
        assert 0.2 < np.std((sent.payload - truth).flat()) < 0.3


def test_the_server_cannot_redraw_and_subtract_dp_sgd_noise():
    flat = {
        "num_clients": 6, "clients_per_round": 2, "rounds": 1, "trainer": "sequential",
        "dp": "sample", "dp_noise": 5.0, "dp_clip": 1.0, "dp_secure_noise": False,
    }  # fmt: skip
    tasks, received, setup = sent_updates(flat)
    for task, sent in zip(tasks, received, strict=True):
        dp, lr = task.config.sample_dp, task.config.lr
        assert dp is not None
        assert sent.weight == 1.0  # the client's example count does not travel either
        count = setup.dataset.clients[task.client_id].num_train  # type: ignore[attr-defined]
        assert count > 1  # (the attacker is given it here, to show the noise alone holds)
        # the attack: replay DP-SGD's draws from the task seed (masks, then noise per
        # parameter), and take their sum off the update
        rng = np.random.default_rng(task.config.seed)
        noise = sent.payload.map(np.zeros_like)
        chosen = 0
        for _ in range(dp.steps):
            chosen += int((rng.random(count) < dp.sampling_rate).sum())
            step = Params(
                {n: rng.normal(0.0, dp.noise_multiplier * dp.clip, a.shape)
                 for n, a in sent.payload.items()}
            )  # fmt: skip
            noise = noise + step
        residual = sent.payload + noise * (lr / (dp.sampling_rate * count))
        # had the noise gone, what is left would be clipped gradients: at most lr·C per
        # chosen example, over the expected batch
        clean_bound = lr * dp.clip * chosen / (dp.sampling_rate * count)
        assert residual.norm() > 3 * clean_bound, "the server removed the DP-SGD noise"


def test_adaptive_clipping_spends_exactly_the_reported_epsilon():
    """Independent of the code's own arithmetic: measure how far one client moves each of
    the two releases (the clipped sum and the clipping-bit sum) with the real client code,
    compose the two Gaussian mechanisms by their definition, and compare ε with
    dp-accounting's."""
    dp_accounting = pytest.importorskip("dp_accounting")
    z, stddev, clip, rate, rounds = 1.0, 2.0, 1.0, 0.1, 100
    strategy = DifferentialPrivacy(
        FedAvg(), noise_multiplier=z, clip=clip, adaptive_clip=True,
        clipped_count_stddev=stddev, client_sampling_rate=rate,
    )  # fmt: skip
    fit = strategy.configure_fit(ServerState.initial(Params({"w": np.zeros(2)}), 0), FitConfig())
    assert fit.privacy is not None
    bits = [
        privatize_update(
            ClientUpdate("c", 1, Params({"w": np.array(v)}), 1.0), fit.privacy, SecureGenerator()
        ).extras[WITHIN_CLIP]
        for v in ([0.1, 0.0], [30.0, 40.0])
    ]
    bit_sensitivity = max(abs(b) for b in bits)  # one client added or removed
    sum_noise = update_noise_multiplier(z, stddev) * clip  # σ on the update sum
    # two Gaussian releases of one neighbour: their privacy losses add as one Gaussian's
    effective = ((clip / sum_noise) ** 2 + (bit_sensitivity / stddev) ** 2) ** -0.5
    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(effective))
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    reported = strategy.epsilon_after(rounds)
    assert bit_sensitivity == 0.5 and effective == pytest.approx(z, rel=1e-12)
    assert reported == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-3)


def test_epsilon_is_accounted_for_the_client_sampling_that_ran(tmp_path):
    """The issue's audit: z = 1, q = 0.1, 100 rounds is ε ≈ 7.9 under Poisson sampling
    and ≈ 14.1 for a fixed 10 of 100 without replacement. Each run reports the figure of
    the sampling it did, checked against dp-accounting directly."""
    dp_accounting = pytest.importorskip("dp_accounting")
    fixed = DifferentialPrivacy(
        FedAvg(), noise_multiplier=1.0, client_sampling_rate=0.1, client_sampling="fixed",
        clients=100,
    )  # fmt: skip
    poisson = DifferentialPrivacy(FedAvg(), noise_multiplier=1.0, client_sampling_rate=0.1)
    replace_one = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE
    )
    event = dp_accounting.SampledWithoutReplacementDpEvent(
        100, 10, dp_accounting.GaussianDpEvent(1.0)
    )
    replace_one.compose(dp_accounting.SelfComposedDpEvent(event, 100))
    assert fixed.epsilon_after(100) == pytest.approx(replace_one.get_epsilon(1e-5), rel=1e-9)
    assert fixed.epsilon_after(100) == pytest.approx(14.05, abs=0.01)
    assert poisson.epsilon_after(100) == pytest.approx(7.90, abs=0.01)
    # a whole run: the sampling it did, in its ledger and in results.json
    flat = {
        "num_clients": 10, "clients_per_round": 3, "rounds": 2, "local_epochs": 1,
        "dp": "client", "dp_noise": 1.0, "evaluate_every": 0,
    }  # fmt: skip
    for sampling, relation in (
        ("fixed", "replace one client"),
        ("auto", "add or remove one client"),
    ):
        out = tmp_path / sampling
        result = simulate(output_dir=out, **nested(**flat, sampling=sampling))
        terms = json.loads((out / "results.json").read_text())["data"]["privacy"]
        assert terms["neighbouring"] == relation
        ledger = result.state.accountant["client"]
        assert ledger.entries == ((1.0, 0.3, 2, 10 if sampling == "fixed" else 0),)
        if sampling == "fixed":
            assert all(len(r.sampled) == 3 for r in result.reports)
            with pytest.raises(ConfigError, match="'rdp' with fixed-size client sampling"):
                ledger.epsilon(1e-5, method="pld")


def params_after(flat, rounds):
    """The global params after ``rounds`` rounds (the initial ones for 0)."""
    if rounds == 0:
        return build(SimulationConfig().with_changes(**nested(**flat))).initial.params
    return simulate(**nested(**flat | {"rounds": rounds})).state.params


def test_poisson_rounds_vary_in_size_and_an_empty_one_still_releases_noise():
    flat = {
        "num_clients": 6, "clients_per_round": 1, "rounds": 8, "local_epochs": 1,
        "dp": "client", "dp_noise": 1.0, "dp_secure_noise": False, "evaluate_every": 0,
    }  # fmt: skip
    result = simulate(**nested(**flat))
    sizes = [len(r.sampled) for r in result.reports]
    assert 0 in sizes and max(sizes) > 1  # q = 1/6: each client joins on its own
    assert result.state.accountant["client"].entries == ((1.0, 1 / 6, 8, 0),)
    # the empty round moved the model by the noise alone: N(0, (z·C)²)/(q·N) per entry
    empty = sizes.index(0) + 1
    before = params_after(flat, empty - 1)
    after = params_after(flat, empty)
    assert 0.5 < np.std((after - before).flat()) < 1.5
    # without DP, an empty Poisson round leaves the model where it was
    plain = {**flat, "dp": "none", "sampling": "poisson"}
    plain_result = simulate(**nested(**plain))
    plain_sizes = [len(r.sampled) for r in plain_result.reports]
    assert 0 in plain_sizes
    k = plain_sizes.index(0) + 1
    same_before = params_after(plain, k - 1)
    same_after = params_after(plain, k)
    assert same_after.bit_equal(same_before)


def test_clients_metrics_reach_the_server_only_inside_the_sum_or_not_at_all():
    base = {
        "num_clients": 8, "clients_per_round": 4, "rounds": 1, "local_epochs": 1,
        "trainer": "sequential",
    }  # fmt: skip
    # what the server receives from each client, as it would log it
    _, secure, _ = sent_updates({**base, "secure_aggregation": "secagg+"})
    assert all(u.metrics == {} and u.extras == {} for u in secure)  # masked: nothing
    _, private, _ = sent_updates({**base, "dp": "client"})
    assert all(u.metrics == {} and set(u.extras) == {WITHIN_CLIP} for u in private)
    _, asked, _ = sent_updates({**base, "dp": "client"}, {"privacy": {"client_metrics": True}})
    assert all("loss" in u.metrics for u in asked)  # the user's choice, outside ε
    # the run still reports the mean training loss, from the secure sum alone
    clear = simulate(**nested(**base | {"rounds": 2}))
    summed = simulate(**nested(**base | {"rounds": 2, "secure_aggregation": "secagg+"}))
    assert summed.reports[-1].metrics["train_loss"] == pytest.approx(
        clear.reports[-1].metrics["train_loss"], rel=1e-5
    )
    # and no client's own evaluation exists to leak: federated evaluation is off
    assert "fed_accuracy" in clear.final_metrics and clear.reports[-1].evaluations
    assert "fed_accuracy" not in summed.final_metrics and not summed.reports[-1].evaluations
    assert "central_accuracy" in summed.final_metrics
