"""Entries that stay on the client: integer counters always, and those a run names."""

import numpy as np
import pytest

from fedstream import ClientUpdate, ConfigError, Params
from fedstream.client.local import (
    LOCAL,
    keep_local,
    local_names,
    personal_entries,
    shared_part,
    start_params,
    with_shared,
)

MODEL = Params(
    {
        "0.weight": np.ones((2, 2), np.float32),
        "1.running_mean": np.zeros(2, np.float32),
        "1.num_batches_tracked": np.array(0, np.int64),
        "2.weight": np.full((1, 2), 2.0, np.float32),
    }
)


def test_integer_entries_are_always_local_and_named_ones_join_them_in_model_order():
    assert local_names(MODEL) == ("1.num_batches_tracked",)
    assert local_names(MODEL, ["2.weight", "1.running_mean"]) == (
        "1.running_mean",
        "1.num_batches_tracked",
        "2.weight",
    )
    with pytest.raises(ConfigError, match=r"local_entries=\['head.weight'\] is invalid"):
        local_names(MODEL, ["head.weight"])


def test_the_update_layout_is_the_shared_part_and_the_global_keeps_its_local_entries():
    local = local_names(MODEL)
    shared = shared_part(MODEL, local)
    assert list(shared) == ["0.weight", "1.running_mean", "2.weight"]
    moved = with_shared(MODEL, shared.map(lambda a: a + 1))
    assert moved["0.weight"][0, 0] == 2.0 and moved["1.num_batches_tracked"] == 0
    assert moved["1.num_batches_tracked"].dtype == np.int64


def test_a_client_trains_from_its_own_local_values_and_keeps_the_new_ones():
    local = local_names(MODEL, ["2.weight"])
    state = {}
    assert start_params(MODEL, state, local) is MODEL  # first time: the global values
    delta = MODEL.map(lambda a: np.ones_like(a) * 3)
    update = ClientUpdate("c", 1, delta, 5.0)
    sent, state = keep_local(update, MODEL, local, state)
    assert list(sent.payload) == ["0.weight", "1.running_mean"]
    assert state[LOCAL]["1.num_batches_tracked"] == 3
    assert state[LOCAL]["2.weight"].tolist() == [[5.0, 5.0]]
    again = start_params(MODEL, state, local)
    assert again["2.weight"].tolist() == [[5.0, 5.0]] and again["0.weight"][0, 0] == 1.0
    # evaluation takes every local entry the client keeps
    assert start_params(MODEL, state)["1.num_batches_tracked"] == 3


def test_personal_layers_are_named_by_module_and_must_leave_something_shared():
    assert personal_entries(MODEL, ["2"]) == ("2.weight",)
    assert personal_entries(MODEL, ["1", "2.weight"]) == (
        "1.running_mean",
        "1.num_batches_tracked",
        "2.weight",
    )
    assert personal_entries(MODEL, []) == ()
    with pytest.raises(
        ConfigError,
        match=r"^model\.personal='fc' is invalid: expected a module of the model, one of "
        r"\['0', '1', '2'\]$",
    ):
        personal_entries(MODEL, ["fc"])
    with pytest.raises(
        ConfigError,
        match=r"^model\.personal=\['0', '1', '2'\] is invalid: expected some of the model's "
        r"layers, not all of them \(nothing would be shared\)$",
    ):
        personal_entries(MODEL, ["0", "1", "2"])


def test_personal_layers_can_be_picked_by_a_predicate_on_entry_names_too():
    def is_last_layer(name: str) -> bool:
        return name.startswith("2.")

    assert personal_entries(MODEL, [], is_last_layer) == ("2.weight",)
    # with modules, the two add up, in the model's order
    assert personal_entries(MODEL, ["1"], is_last_layer) == (
        "1.running_mean",
        "1.num_batches_tracked",
        "2.weight",
    )
    with pytest.raises(
        ConfigError,
        match=r"^app\.personal='<lambda>' is invalid: expected a predicate true for some of the "
        r"model's entries \['0\.weight', ",
    ):
        personal_entries(MODEL, [], lambda name: name.startswith("head."))
    with pytest.raises(
        ConfigError,
        match=r"^app\.personal='everything' is invalid: expected some of the model's layers, "
        r"not all of them",
    ):

        def everything(name: str) -> bool:
            return True

        personal_entries(MODEL, [], everything)
