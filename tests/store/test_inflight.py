"""An asynchronous run's work in progress through a checkpoint and back."""

import numpy as np
import pytest

from fedstream import ClientUpdate, FitConfig, Params, ServerState
from fedstream.client.base import FitTask
from fedstream.errors import ClientFailure
from fedstream.rounds.fleet import Event, InFlight
from fedstream.store.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

MODEL = Params({"w": np.arange(4, dtype=np.float32), "b": np.ones(1, np.float32)})
FIT = FitConfig(local_epochs=2, lr=0.1, seed=99, local_entries=("b",))


def work_in_progress() -> InFlight:
    task = FitTask("c1", 3, FIT)
    lost = FitTask("c2", 4, FIT)
    update = ClientUpdate("c3", 2, MODEL * 0.5, 7.0, {"loss": 0.25}, {"steps": 4.0})
    return InFlight(
        now=12.5,
        next_order=40,
        events=(
            Event(13.0, 31, task, True, 10.0),
            Event(14.0, 35, lost, False, 12.0),
            Event(20.0, 39, None),  # a wake-up
        ),
        outcomes={"c3": update, "c4": ClientFailure("c4", "validate", "payload contains NaN")},
        versions={3: (MODEL * 2.0, FIT)},
    )


def test_work_in_progress_round_trips_through_a_checkpoint(tmp_path):
    state = ServerState.initial(MODEL, seed=0).evolve(round=5, in_flight=work_in_progress())
    folder = save_checkpoint(tmp_path, state)
    loaded, _ = load_checkpoint(folder)
    got, want = loaded.in_flight, work_in_progress()
    assert got is not None
    assert (got.now, got.next_order, got.events) == (want.now, want.next_order, want.events)
    update = got.outcomes["c3"]
    assert isinstance(update, ClientUpdate) and update.payload.bit_equal(MODEL * 0.5)
    assert (update.round, update.weight, update.metrics, update.extras) == (
        2,
        7.0,
        {"loss": 0.25},
        {"steps": 4.0},
    )
    assert got.outcomes["c4"] == want.outcomes["c4"]
    params, fit = got.versions[3]
    assert params.bit_equal(MODEL * 2.0) and fit == FIT
    # a synchronous run's checkpoint has none
    plain, _ = load_checkpoint(save_checkpoint(tmp_path / "sync", ServerState.initial(MODEL, 0)))
    assert plain.in_flight is None


def test_altered_work_in_progress_is_refused(tmp_path):
    state = ServerState.initial(MODEL, seed=0).evolve(round=5, in_flight=work_in_progress())
    folder = save_checkpoint(tmp_path, state)
    (folder / "in_flight.safetensors").write_bytes(b"not the arrays")
    with pytest.raises(CheckpointError, match=r"in_flight\.safetensors does not match its SHA"):
        load_checkpoint(folder)
