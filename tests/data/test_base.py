"""Pooled clients read as a cohort: the same rows as one client at a time, in one gather."""

import numpy as np
import pytest

from fedstream.data.base import (
    ClientData,
    Clients,
    PooledCohort,
    cohort_in_order,
    cohort_train_sizes,
    packed,
    padded_train,
)


def pooled(rng: np.random.Generator, sizes=(3, 0, 7, 1, 5), tests=(1, 2, 0, 0, 3)) -> Clients:
    """Clients whose rows lie shuffled through the pool, with (2, 3)-shaped examples."""
    total = sum(sizes) + sum(tests)
    x = rng.normal(size=(total, 2, 3)).astype(np.float32)
    y = rng.integers(0, 9, size=total)
    rows = rng.permutation(total)
    train = np.split(rows[: sum(sizes)], np.cumsum(sizes)[:-1])
    test = np.split(rows[sum(sizes) :], np.cumsum(tests)[:-1])
    names = [f"c{k}" for k in range(len(sizes))]
    return Clients(names, x, y, *packed(train), *packed(test))


def test_a_cohorts_padded_rows_are_each_clients_own_rows_then_zeros():
    clients = pooled(np.random.default_rng(0))
    names = ["c2", "c1", "c0", "c3", "c4"]  # not the pool's order; c1 holds no rows
    x, y = clients.cohort(names).padded_train()
    assert x.shape == (5, 7, 2, 3) and y.shape == (5, 7)
    assert x.dtype == np.float32 and y.dtype == clients.y.dtype
    for k, name in enumerate(names):
        own = clients[name]
        n = own.num_train
        np.testing.assert_array_equal(x[k, :n], own.x_train)
        np.testing.assert_array_equal(y[k, :n], own.y_train)
        assert not x[k, n:].any() and not y[k, n:].any()
    full, _ = clients.cohort(["c2"]).padded_train()  # no padding at all
    np.testing.assert_array_equal(full[0], clients["c2"].x_train)


def test_a_cohort_gives_the_same_as_a_list_of_its_clients():
    clients = pooled(np.random.default_rng(1))
    names = ["c4", "c3", "c2", "c0"]
    cohort = clients.cohort(names)
    listed = [clients[name] for name in names]
    assert len(cohort) == 4
    np.testing.assert_array_equal(cohort_train_sizes(cohort), [5, 1, 7, 3])
    np.testing.assert_array_equal(cohort_train_sizes(cohort), cohort_train_sizes(listed))
    for a, b in zip(padded_train(cohort), padded_train(listed), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    order = [2, 0, 3, 1]
    again = cohort_in_order(cohort, order)
    assert isinstance(again, PooledCohort)
    for a, b in zip(padded_train(again), padded_train(cohort_in_order(listed, order)), strict=True):
        np.testing.assert_array_equal(a, b)
    for k, name in enumerate(names):  # one client at a time, as the pool gives it
        for field in ("x_train", "y_train", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(cohort[k], field), getattr(clients[name], field))
    assert [c.num_train for c in cohort[1:3]] == [1, 7]


def test_padded_rows_are_a_copy_the_trainer_may_change():
    clients = pooled(np.random.default_rng(2))
    before = clients.x.copy()
    x, _ = clients.cohort(["c0", "c2"]).padded_train()
    x += 1.0
    np.testing.assert_array_equal(clients.x, before)


def test_an_unknown_client_in_a_cohort_is_named():
    clients = pooled(np.random.default_rng(3))
    with pytest.raises(KeyError, match="nobody"):
        clients.cohort(["c0", "nobody"])


def test_a_list_of_clients_is_padded_too():
    a = ClientData(np.ones((2, 3)), np.array([1, 2]), np.ones((0, 3)), np.zeros(0))
    b = ClientData(np.full((1, 3), 2.0), np.array([3]), np.ones((0, 3)), np.zeros(0))
    x, y = padded_train([a, b])
    np.testing.assert_array_equal(y, [[1, 2], [3, 0]])
    np.testing.assert_array_equal(x[1], [[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
