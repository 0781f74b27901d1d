"""How SecAgg+ sizes its neighbour graph: the failure bound, worked by hand, and the
fewest neighbours that meet it."""

import pytest

from fedstream.secure.secagg import choose_neighbours, round_failure_chance


def test_the_failure_bound_by_hand():
    # P(Bin(10, 0.9) ≤ 5) = Σ_{i≤5} C(10, i)·0.9^i·0.1^(10−i) = 0.00163493740; × 100 clients
    assert round_failure_chance(100, 10, 6, 0.1) == pytest.approx(0.163493740, rel=1e-8)
    assert round_failure_chance(10**9, 3, 3, 0.5) == 1.0  # a union bound, capped at 1


@pytest.mark.parametrize(
    ("clients", "dropout", "corrupt", "neighbours"),
    [
        (5, 0.0, 0.0, 1),  # nobody drops: one neighbour, threshold 1
        (100, 0.1, 0.0, 31),
        (1000, 0.05, 1 / 3, 47),
        (31, 0.1, 0.0, 29),  # n − 2
        (10, 0.5, 0.0, 9),  # none is safe enough: everyone else
    ],
)
def test_the_fewest_neighbours_that_meet_the_target(clients, dropout, corrupt, neighbours):
    assert choose_neighbours(clients, dropout, corrupt) == neighbours
