"""Client algorithms: SCAFFOLD's correction and control variate, by hand."""

import numpy as np
import pytest
import torch

from fedstream import ConfigError, FitConfig, FitTask, Params, TorchTrainer
from fedstream.client import params_from_module
from fedstream.client.algorithms import (
    CLIENT_CONTROL,
    CONTROL,
    join_extras,
    scaffold_correction,
    scaffold_finish,
    split_extras,
)
from fedstream.client.runtime import finish_fit, start_fit
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
