"""The client-state seam: one store per client, in checkpoints and on a client's disk."""

import numpy as np
import pytest

from fedstream import ConfigError, Params
from fedstream.client.state import (
    DiskClientState,
    MemoryClientStates,
    checkpoint_layout,
    decode_state,
    encode_state,
    from_checkpoint_layout,
)

RESIDUAL = Params({"0.weight": np.arange(6, dtype=np.float32).reshape(2, 3)})
VARIATE = Params({"0.weight": np.ones((2, 3)), "0.bias": np.zeros(2)})


def same(a, b):
    assert sorted(a) == sorted(b)
    assert all(a[k].bit_equal(b[k]) for k in a)


def test_a_state_round_trips_through_its_encoding():
    state = {"residual": RESIDUAL, "scaffold.c": VARIATE}
    same(decode_state(encode_state(state)), state)
    with pytest.raises(ConfigError, match="client state entry='a/b' is invalid"):
        encode_state({"a/b": RESIDUAL})


def test_many_clients_round_trip_through_the_checkpoint_layout_whatever_their_ids():
    states = {"role/with/slashes": {"residual": RESIDUAL}, "ü-7": {"c": VARIATE, "r": RESIDUAL}}
    data, ids = checkpoint_layout(states)
    restored = from_checkpoint_layout(data, ids)
    assert sorted(restored) == sorted(states)
    for client_id, state in states.items():
        same(restored[client_id], state)


def test_the_memory_store_forgets_a_client_whose_state_empties():
    store = MemoryClientStates()
    assert store.of("a") == {}
    store.put("a", {"residual": RESIDUAL})
    snapshot = store.snapshot()
    store.put("a", {})
    assert "a" not in store and "a" in snapshot
    store.restore(snapshot)
    same(store.of("a"), {"residual": RESIDUAL})


def test_a_disk_state_survives_a_new_process_and_is_replaced_whole(tmp_path):
    disk = DiskClientState(tmp_path / "client-0")
    assert disk.load() == {}
    disk.save({"residual": RESIDUAL})
    same(DiskClientState(tmp_path / "client-0").load(), {"residual": RESIDUAL})
    disk.save({"scaffold.c": VARIATE})
    same(DiskClientState(tmp_path / "client-0").load(), {"scaffold.c": VARIATE})
    assert [p.name for p in (tmp_path / "client-0").iterdir()] == ["state.safetensors"]


def test_a_damaged_state_file_is_an_error_naming_it_never_an_empty_state(tmp_path):
    disk = DiskClientState(tmp_path)
    disk.save({"residual": RESIDUAL})
    disk.path.write_bytes(disk.path.read_bytes()[:-3])
    with pytest.raises(ConfigError, match=r"state\.safetensors"):
        disk.load()
