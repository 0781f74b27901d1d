"""Bulk epoch shuffles against the generator each client would make for itself."""

import numpy as np

from fedstream.client.shuffles import epoch_shuffles

EDGE_SEEDS = [0, 1, 2**32 - 1, 2**32, 2**63 - 2, 2**64 - 1, 2**64, 2**127 + 5, 2**128 - 1]


def test_every_client_gets_the_permutations_its_own_default_rng_draws():
    drawn = np.random.default_rng(5)
    seeds = [int(s) for s in drawn.integers(0, 2**63 - 1, 300)] + EDGE_SEEDS
    sizes = [int(n) for n in drawn.integers(0, 40, len(seeds))]
    shuffles = epoch_shuffles(seeds, sizes, epochs=3)
    for seed, size, own in zip(seeds, sizes, shuffles, strict=True):
        alone = np.random.default_rng(seed)
        expected = [alone.permutation(size) for _ in range(3)]
        assert len(own) == 3
        for got, want in zip(own, expected, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=f"seed {seed}")


def test_seeds_past_the_pool_go_through_default_rng_and_agree():
    seeds = [2**128, 2**200 + 7]
    shuffles = epoch_shuffles(seeds, [9, 9], epochs=2)
    for seed, own in zip(seeds, shuffles, strict=True):
        alone = np.random.default_rng(seed)
        for got in own:
            np.testing.assert_array_equal(got, alone.permutation(9))


def test_a_cohort_of_one_client_and_of_none():
    assert epoch_shuffles([], [], epochs=2) == []
    (only,) = epoch_shuffles([42], [5], epochs=1)
    np.testing.assert_array_equal(only[0], np.random.default_rng(42).permutation(5))
