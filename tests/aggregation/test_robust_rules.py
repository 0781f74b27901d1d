"""Krum, Multi-Krum, Bulyan, the geometric median, centered clipping and norm bounding,
each pinned by hand on small updates, with the attacker bounds they refuse to break."""

import numpy as np
import pytest

from fedstream import ConfigError, Params
from fedstream.aggregation import UpdateBuffer
from fedstream.aggregation.robust import (
    bucketed,
    bulyan,
    centered_clipping,
    check_byzantine,
    geometric_median,
    krum_scores,
    multi_krum,
    norm_bounded_mean,
    pairwise_square_distances,
)


def matrix(rows, budget=1 << 20):
    width = len(rows[0])
    like = Params({"w": np.zeros(width, np.float32)})
    buffer = UpdateBuffer(like, len(rows), budget)
    for k, row in enumerate(rows):
        buffer.add(f"c{k}", Params({"w": np.array(row, np.float32)}), weight=float(k + 1))
    return buffer.matrix()


SQUARE = [[0, 0], [1, 0], [0, 1], [1, 1], [100, 100]]  # four honest corners, one attacker


def test_krum_picks_the_update_whose_nearest_neighbours_are_nearest():
    updates = matrix(SQUARE)
    distances = pairwise_square_distances(updates)
    assert distances[0].tolist() == [0.0, 1.0, 1.0, 2.0, 20000.0]
    # n − f − 2 = 2 nearest: each corner has two neighbours at 1; the attacker's are far
    assert krum_scores(distances, 1).tolist()[:4] == [2.0, 2.0, 2.0, 2.0]
    assert multi_krum(updates, 1, keep=1).tolist() == [0.0, 0.0]  # a tie: the first row
    assert multi_krum(updates, 1).tolist() == [0.5, 0.5]  # n − f = 4 kept: the corners' mean


def test_bulyan_chooses_by_krum_then_averages_around_each_median():
    # θ = n − 2f = 6 chosen by Krum one at a time: 4, 3, 5, 2, 6, 1 (never the 1000);
    # then the 4 values nearest their median 3.5 are 3, 4, 2, 5: mean 3.5
    updates = matrix([[v] for v in (1, 2, 3, 4, 5, 6, 7, 1000)])
    assert bulyan(updates, 1).tolist() == [3.5]


def test_the_geometric_median_holds_against_a_far_point():
    assert geometric_median(matrix([[0.0], [1.0], [10.0]]))[0] == pytest.approx(1.0, abs=1e-4)
    corners = matrix([[0, 0], [2, 0], [0, 2], [2, 2]])
    np.testing.assert_allclose(geometric_median(corners), [1.0, 1.0], atol=1e-6)
    attacked = geometric_median(matrix(SQUARE))
    assert np.all(attacked < 1.0)  # the mean would be at 20.4


def test_centered_clipping_by_hand():
    # from the median 0, τ = 1: v = 0.25, then 0.3125, then 0.328125
    assert centered_clipping(matrix([[0], [0], [0], [10]]), radius=1.0, iterations=3).tolist() == [
        0.328125
    ]
    assert centered_clipping(matrix([[0], [0], [0], [10]]), radius=1.0, iterations=1).tolist() == [
        0.25
    ]


def test_norm_bounding_by_hand_with_and_without_a_bound():
    rows = [[3, 4], [0, 1], [6, 8]]  # norms 5, 1, 10
    np.testing.assert_allclose(norm_bounded_mean(matrix(rows), 2.0), [0.8, 1.4])
    np.testing.assert_allclose(norm_bounded_mean(matrix(rows)), [2.0, 3.0])  # M = median 5


@pytest.mark.parametrize(
    ("rule", "count", "byzantine", "message"),
    [
        (
            "krum",
            4,
            1,
            r"^strategy\.byzantine=1 is invalid: expected at most 0 for krum over 4 updates "
            r"\(it needs n > 2f \+ 2\)$",
        ),
        ("multi_krum", 8, 3, r"expected at most 2 for multi_krum over 8 updates"),
        ("bulyan", 7, 1, r"at most 0 for bulyan over 7 updates \(it needs n > 4f \+ 3\)$"),
        ("bulyan", 3, 0, r"expected no attackers at all for bulyan over 3 updates"),
    ],
)
def test_a_rule_asked_to_tolerate_too_many_attackers_names_the_numbers(
    rule, count, byzantine, message
):
    with pytest.raises(ConfigError, match=message):
        check_byzantine(rule, count, byzantine)
    check_byzantine(rule, count + 4 * byzantine + 4, byzantine)  # enough updates: no error


def test_rules_read_spilled_updates_in_blocks_and_agree():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(9, 300)).tolist()
    for rule in (
        lambda u: multi_krum(u, 2), lambda u: bulyan(u, 1), geometric_median,
        centered_clipping, norm_bounded_mean,
    ):  # fmt: skip
        np.testing.assert_allclose(rule(matrix(rows, budget=500)), rule(matrix(rows)), rtol=1e-12)


def test_bucketing_averages_the_shuffled_updates_in_buckets():
    updates = matrix([[v, 10 * v] for v in (1, 2, 3, 4, 5, 6)])
    order = np.random.default_rng(7).permutation(6)
    buckets = bucketed(updates, 4, np.random.default_rng(7))
    assert buckets.count == 2 and buckets.client_ids == ("bucket-0", "bucket-1")
    values = np.array([1, 2, 3, 4, 5, 6], float)
    expected = [values[order[:4]].mean(), values[order[4:]].mean()]
    np.testing.assert_allclose(buckets.rows[:, 0], expected)
    np.testing.assert_allclose(buckets.rows[:, 1], 10 * np.array(expected))
    assert bucketed(updates, 1, np.random.default_rng(7)).count == 6  # size 1: a shuffle
    with pytest.raises(ConfigError, match=r"^strategy\.bucket_size=0 is invalid"):
        bucketed(updates, 0, np.random.default_rng(7))
