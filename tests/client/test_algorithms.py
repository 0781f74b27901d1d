"""Client algorithms by hand: SCAFFOLD's correction and control variate, FedNova's
normalisation, FedDyn's gradient state, Ditto's personal model, FedRep's two passes."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from fedstream import ConfigError, FitConfig, FitTask, Params, TorchTrainer
from fedstream.client import params_from_module
from fedstream.client.algorithms import (
    CLIENT_CONTROL,
    CONTROL,
    DYN_GRADIENT,
    NOVA_STEPS,
    PERSONAL_MODEL,
    fednova_finish,
    join_extras,
    nova_steps,
    scaffold_correction,
    scaffold_finish,
    split_extras,
)
from fedstream.client.local import LOCAL
from fedstream.client.runtime import finish_fit, head_fit, personal_fit, start_fit
from fedstream.client.vectorized import VectorizedTrainer
from fedstream.types import ClientUpdate
from tests.client.test_trainers import one_weight_model, single_example


def weight(value):
    return Params({"w": np.array([value], np.float64)})


def test_extras_travel_inside_the_params_and_come_apart_again():
    model = Params({"0.weight": np.ones((2, 2)), "0.bias": np.zeros(2)})
    joined = join_extras(model, {CONTROL: model * 3})
    assert list(joined) == ["0.weight", "0.bias", "@c/0.weight", "@c/0.bias"]
    again, extras = split_extras(joined)
    assert again.bit_equal(model) and extras[CONTROL].bit_equal(model * 3)
    assert split_extras(model) == (model, {})


def test_the_control_variate_update_by_hand():
    # c = 0.5, c_i = 0.1, 3 steps of η = 0.1 moved the weight by −0.3:
    # c_i⁺ = 0.1 − 0.5 − (−0.3)/(3·0.1) = 0.6, so Δc = 0.5
    state = {CLIENT_CONTROL: weight(0.1)}
    assert scaffold_correction(weight(0.5), state)["w"].tolist() == [0.4]
    payload, new = scaffold_finish(weight(-0.3), weight(0.5), state, steps=3, lr=0.1)
    np.testing.assert_allclose(new[CLIENT_CONTROL]["w"], [0.6])
    delta, extras = split_extras(payload)
    assert delta["w"].tolist() == [-0.3]
    np.testing.assert_allclose(extras[CONTROL]["w"], [0.5])
    # a first-time client has c_i = 0: its correction is c itself
    assert scaffold_correction(weight(0.5), {})["w"].tolist() == [0.5]


def test_a_scaffold_task_corrects_every_gradient_and_keeps_the_new_variate():
    # x = 1, y = 0, w = 1, b = 0, loss (wx + b − y)², lr 0.1, one step: gradient (2, 2),
    # plus c − c_i = (0.5, 0.5) → w 0.75, b −0.25
    model, data = one_weight_model(), single_example()
    start = params_from_module(model)
    control = start.map(lambda a: np.full_like(a, 0.5))
    config = FitConfig(local_epochs=1, batch_size=1, lr=0.1, algorithm="scaffold")
    started = start_fit(start, {CONTROL: control}, FitTask("c", 1, config), {})
    assert started.start.bit_equal(start)
    update = TorchTrainer(model, "regression").fit(started.start, started.task, data)
    np.testing.assert_allclose(update.payload.flat(), [-0.25, -0.25])
    assert update.metrics["steps"] == 1.0
    sent, state = finish_fit(update, started, {})
    assert "steps" not in sent.metrics  # the step count stays on the client
    delta, extras = split_extras(sent.payload)
    np.testing.assert_allclose(delta.flat(), [-0.25, -0.25])
    # c_i⁺ = 0 − 0.5 + 0.25/(1·0.1) = 2.0
    np.testing.assert_allclose(state[CLIENT_CONTROL].flat(), [2.0, 2.0])
    np.testing.assert_allclose(extras[CONTROL].flat(), [2.0, 2.0])


def test_scaffold_needs_the_servers_variate_and_plain_sgd():
    model, data = one_weight_model(), single_example()
    start = params_from_module(model)
    config = FitConfig(algorithm="scaffold")
    with pytest.raises(ConfigError, match="the server's control variate @c"):
        start_fit(start, {}, FitTask("c", 1, config), {})
    started = start_fit(start, {CONTROL: start}, FitTask("c", 1, config), {})
    adam = TorchTrainer(model, "regression", optimizer=lambda p, lr: torch.optim.Adam(p))
    with pytest.raises(ConfigError, match="algorithm='scaffold' is invalid: expected 'sgd' for a"):
        adam.fit(started.start, started.task, data)


def test_fednova_weighs_a_clients_steps_by_hand():
    assert nova_steps(5, lr=0.1, mu=0.0) == 5.0  # plain SGD: a_i = τ_i
    # with FedProx's μ = 1 and η = 0.1 each earlier step decays by 0.9 per later step:
    # 1 + 0.9 + 0.81 = 2.71
    assert nova_steps(3, lr=0.1, mu=1.0) == pytest.approx(2.71, rel=1e-12)
    assert nova_steps(0, lr=0.1, mu=1.0) == 0.0
    # 4 examples took 5 steps: the delta is divided by 5, and 4·5 = 20 rides in the sum
    update = ClientUpdate("a", 1, Params({"w": np.array([0.5, -1.0], np.float32)}), 4.0, {})
    sent = fednova_finish(update, steps=5, lr=0.1, mu=0.0)
    np.testing.assert_allclose(sent.payload["w"], [0.1, -0.2], rtol=1e-7)
    assert sent.payload["w"].dtype == np.float32 and sent.extras == {NOVA_STEPS: 20.0}
    idle = fednova_finish(replace(update, payload=update.payload * 0), 0, 0.1, 0.0)
    assert idle.extras == {NOVA_STEPS: 0.0} and not idle.payload["w"].any()


def test_a_fednova_task_counts_its_steps_and_sends_the_normalised_delta():
    # the SCAFFOLD example without a correction: x = 1, y = 0, w = 1, b = 0, loss
    # (wx + b − y)², two epochs of one step at lr 0.1: gradient (2, 2) → (0.8, −0.2); the
    # prediction is then 0.6, gradient (1.2, 1.2) → (0.68, −0.32). Δ = −0.32 over τ = 2
    model, data = one_weight_model(), single_example()
    start = params_from_module(model)
    config = FitConfig(local_epochs=2, batch_size=1, lr=0.1, algorithm="fednova")
    started = start_fit(start, {}, FitTask("c", 1, config), {})
    update = TorchTrainer(model, "regression").fit(started.start, started.task, data)
    np.testing.assert_allclose(update.payload.flat(), [-0.32, -0.32], rtol=1e-6)
    assert update.metrics["steps"] == 2.0
    sent, _ = finish_fit(update, started, {})
    assert "steps" not in sent.metrics
    np.testing.assert_allclose(sent.payload.flat(), [-0.16, -0.16], rtol=1e-6)
    assert sent.extras == {NOVA_STEPS: 2.0}  # one example × two steps
    adam = TorchTrainer(model, "regression", optimizer=lambda p, lr: torch.optim.Adam(p))
    with pytest.raises(ConfigError, match="algorithm='fednova' is invalid: expected 'sgd' for a"):
        adam.fit(started.start, started.task, data)


def test_a_feddyn_task_corrects_by_its_own_gradient_and_keeps_the_new_one():
    # x = 1, y = 0, w = 1, b = 0, loss (wx + b − y)², α = 0.5, lr 0.1, one step, with
    # g_i = (0.4, 0.4) kept from before: gradient (2, 2) + α·0 − g_i = (1.6, 1.6), so
    # w, b = 0.84, −0.16; then g_i ← g_i − α·Δ = 0.4 + 0.5·0.16 = 0.48
    model, data = one_weight_model(), single_example()
    start = params_from_module(model)
    before = {DYN_GRADIENT: start.map(lambda a: np.full_like(a, 0.4))}
    config = FitConfig(local_epochs=1, batch_size=1, lr=0.1, algorithm="feddyn", proximal_mu=0.5)
    started = start_fit(start, {}, FitTask("c", 1, config), before)
    update = TorchTrainer(model, "regression").fit(started.start, started.task, data)
    sent, state = finish_fit(update, started, before)
    np.testing.assert_allclose(sent.payload.flat(), [-0.16, -0.16], rtol=1e-6)
    assert sent.extras == {} and "steps" not in sent.metrics  # g_i stays on the client
    np.testing.assert_allclose(state[DYN_GRADIENT].flat(), [0.48, 0.48], rtol=1e-6)
    # a first-time client has no g_i: plain FedProx, and g_i starts at −α·Δ
    first = start_fit(start, {}, FitTask("c", 1, config), {})
    assert first.task.correction is None


def test_a_ditto_task_sends_the_global_delta_and_keeps_the_personal_model():
    # x = 1, y = 0, loss (wx + b − y)², lr 0.1, one step each. The global pass from the
    # server's (w, b) = (1, 0): gradient (2, 2) → delta (−0.2, −0.2), as plain SGD. The
    # personal pass from the kept v = (0.5, 0): gradient 2·0.5 = 1 each, plus
    # λ·(v − x) = 1·(−0.5, 0) → (0.5, 1), so v becomes (0.45, −0.1)
    model, data = one_weight_model(), single_example()
    start = params_from_module(model)
    before = {PERSONAL_MODEL: Params({"0.weight": np.array([[0.5]]),
                                      "0.bias": np.array([0.0])})}  # fmt: skip
    config = FitConfig(local_epochs=1, batch_size=1, lr=0.1, algorithm="ditto",
                       personal_lambda=1.0)  # fmt: skip
    started = start_fit(start, {}, FitTask("c", 1, config), before)
    trainer = TorchTrainer(model, "regression")
    update = trainer.fit(started.start, started.task, data)
    (kept,) = personal_fit(trainer, [data], [started], [before])
    sent, state = finish_fit(update, started, kept, {})
    np.testing.assert_allclose(sent.payload.flat(), [-0.2, -0.2], rtol=1e-6)
    assert sent.extras == {} and "steps" not in sent.metrics
    np.testing.assert_allclose(state[PERSONAL_MODEL].flat(), [0.45, -0.1], rtol=1e-6)
    # a first-time client starts its personal model from the server's
    (fresh,) = personal_fit(trainer, [data], [started], [{}])
    np.testing.assert_allclose(fresh[PERSONAL_MODEL].flat(), [0.8, -0.2], rtol=1e-6)


@pytest.mark.parametrize("trainer_cls", [TorchTrainer, VectorizedTrainer])
def test_a_fedrep_task_fits_the_head_on_the_frozen_body_then_the_body_alone(trainer_cls):
    # x = 1, y = 0, loss (wx + b − y)², lr 0.1, one step each; the head is the bias, the
    # client keeps b = 0.5, the server sends (w, b) = (1, 0). Head pass, w frozen: output
    # 1.5, ∂/∂b = 3 → b = 0.2. Body pass, b frozen: output 1.2, ∂/∂w = 2.4 → w = 0.76.
    # The client sends Δw = −0.24 and keeps b = 0.2.
    model, data = one_weight_model(), single_example()
    start = params_from_module(model)
    before = {LOCAL: Params({"0.bias": np.array([0.5])})}
    config = FitConfig(local_epochs=1, batch_size=1, lr=0.1, algorithm="fedrep",
                       personal_epochs=1, local_entries=("0.bias",))  # fmt: skip
    trainer = trainer_cls(model, "regression")
    (started,) = head_fit(trainer, [data], [start_fit(start, {}, FitTask("c", 1, config), before)])
    assert started.task.frozen == ("0.bias",)
    np.testing.assert_allclose(started.start.flat(), [1.0, 0.2], rtol=1e-6)
    update = trainer.fit(started.start, started.task, data)
    sent, state = finish_fit(update, started, before)
    assert list(sent.payload) == ["0.weight"] and "steps" not in sent.metrics
    np.testing.assert_allclose(sent.payload.flat(), [-0.24], rtol=1e-6)
    np.testing.assert_allclose(state[LOCAL]["0.bias"], [0.2], rtol=1e-6)


def test_a_cohort_of_fedrep_tasks_fits_each_clients_own_head():
    # the head passes of a cohort run together and end where each alone does
    model, data = one_weight_model(), single_example()
    start = params_from_module(model)
    config = FitConfig(local_epochs=1, batch_size=1, lr=0.1, algorithm="fedrep",
                       personal_epochs=2, local_entries=("0.bias",))  # fmt: skip
    states = [{LOCAL: Params({"0.bias": np.array([b])})} for b in (0.5, -1.0, 2.0)]
    tasks = [start_fit(start, {}, FitTask(f"c{k}", 1, config), s) for k, s in enumerate(states)]
    trainer = VectorizedTrainer(model, "regression")
    together = head_fit(trainer, [data] * 3, tasks)
    alone = [head_fit(trainer, [data], [t])[0] for t in tasks]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.start.flat(), b.start.flat(), rtol=1e-12)
    assert len({t.start["0.bias"].item() for t in together}) == 3


def test_a_cohort_of_ditto_tasks_trains_each_clients_own_personal_model():
    # the personal passes of a cohort run together and end where each alone does
    model, data = one_weight_model(), single_example()
    start = params_from_module(model)
    config = FitConfig(local_epochs=2, batch_size=1, lr=0.1, algorithm="ditto",
                       personal_lambda=0.5)  # fmt: skip
    states = [{PERSONAL_MODEL: start.map(lambda a, v=v: np.full_like(a, v))} for v in (0.5, -1.0)]
    started = [start_fit(start, {}, FitTask(f"c{k}", 1, config), s) for k, s in enumerate(states)]
    trainer = VectorizedTrainer(model, "regression")
    together = personal_fit(trainer, [data] * 2, started, states)
    alone = [
        personal_fit(trainer, [data], [one], [s])[0] for one, s in zip(started, states, strict=True)
    ]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a[PERSONAL_MODEL].flat(), b[PERSONAL_MODEL].flat(), rtol=1e-12)
    assert not np.allclose(together[0][PERSONAL_MODEL].flat(), together[1][PERSONAL_MODEL].flat())
