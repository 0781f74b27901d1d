"""The round loops keep the objects alive when they start out of full collections."""

import gc

import pytest

from fedstream import FedAvg, RoundConfig, ServerState
from fedstream.rounds import run_rounds
from fedstream.rounds.heap import settled, settled_heap
from tests.rounds.scripted import CLIENTS, GLOBAL, transport


@pytest.fixture(autouse=True)
def nothing_frozen_before():
    gc.unfreeze()  # a clean start, whatever ran before in this process
    yield
    gc.unfreeze()


def test_objects_alive_at_the_start_are_frozen_for_the_block_only():
    before = [[] for _ in range(3)]  # tracked containers alive when the block starts
    with settled_heap():
        assert gc.get_freeze_count() >= len(before)
        assert not any(x is before for x in gc.get_objects())  # in no generation: frozen
        cycle: list[object] = []
        cycle.append(cycle)  # garbage made inside is still found by a full pass
        del cycle
        assert gc.collect() >= 1
        assert gc.get_freeze_count() > 0  # (frozen objects freed meanwhile leave the count)
    assert gc.get_freeze_count() == 0
    assert any(x is before for x in gc.get_objects())  # handed back to the collector


def test_a_freeze_someone_else_made_is_left_to_them():
    mine = [[]]
    gc.freeze()
    with settled_heap():
        made_inside = [[]]
        assert any(x is made_inside for x in gc.get_objects())  # not frozen by the block
    assert gc.get_freeze_count() > 0  # not unfrozen under them
    assert not any(x is mine for x in gc.get_objects())  # theirs stays frozen


def test_the_heap_is_unfrozen_when_the_loop_ends_or_is_dropped():
    def steps():
        yield gc.get_freeze_count()
        yield gc.get_freeze_count()

    first, second = settled(steps())
    assert first > 0 and second > 0
    assert gc.get_freeze_count() == 0
    early = settled(steps())
    assert next(early) > 0
    early.close()  # the caller stops after one step
    assert gc.get_freeze_count() == 0


def test_run_rounds_runs_with_the_heap_settled_and_hands_it_back():
    state = ServerState.initial(GLOBAL, seed=0)
    config = RoundConfig(clients_per_round=3)
    counts = [
        gc.get_freeze_count()
        for _ in run_rounds(state, FedAvg(), transport(), CLIENTS, config, until_round=2)
    ]
    assert len(counts) == 2 and min(counts) > 0
    assert gc.get_freeze_count() == 0
