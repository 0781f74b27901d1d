import numpy as np
import pytest

from fedstream import ConfigError, Params
from fedstream.aggregation import UpdateBuffer, coordinate_median, trimmed_mean

LIKE = Params({"w": np.zeros(2, np.float32)})


def matrix(rows, budget=1 << 20):
    buffer = UpdateBuffer(LIKE, len(rows), budget)
    for k, row in enumerate(rows):
        buffer.add(f"c{k}", Params({"w": np.array(row, np.float32)}), weight=float(k + 1))
    return buffer.matrix()


def test_the_coordinate_median_by_hand():
    assert coordinate_median(matrix([[1, 10], [2, 20], [100, -5]])).tolist() == [2.0, 10.0]
    assert coordinate_median(matrix([[1, 0], [2, 0], [3, 0], [4, 9]])).tolist() == [2.5, 0.0]


def test_the_trimmed_mean_by_hand_and_its_limit():
    rows = [[1, -50], [2, 0], [3, 1], [400, 2]]
    assert trimmed_mean(matrix(rows), 0.25).tolist() == [2.5, 0.5]  # one dropped at each end
    assert trimmed_mean(matrix(rows), 0.0).tolist() == [101.5, -11.75]  # the plain mean
    with pytest.raises(ConfigError, match=r"trim_fraction=0\.5 is invalid: expected below 0\.5"):
        trimmed_mean(matrix(rows[:2]), 0.5)


def test_declared_weights_play_no_part():
    rows = [[1, 1], [2, 2], [3, 3]]
    updates = matrix(rows)
    assert updates.weights.tolist() == [1.0, 2.0, 3.0]
    assert coordinate_median(updates).tolist() == [2.0, 2.0]


def test_past_the_budget_updates_spill_to_a_memory_mapped_file_and_give_the_same_answer():
    rng = np.random.default_rng(0)
    like = Params({"a": np.zeros((30, 40), np.float32), "b": np.zeros(7, np.float32)})
    payloads = [like.map(lambda z: rng.normal(size=z.shape).astype(np.float32)) for _ in range(9)]

    def collect(budget):
        buffer = UpdateBuffer(like, 9, budget)
        for k, payload in enumerate(payloads):
            buffer.add(f"c{k}", payload, 1.0)
        return buffer.matrix()

    in_memory, spilled = collect(1 << 20), collect(1000)
    assert in_memory.in_memory and not spilled.in_memory
    expected = np.median(np.stack([p.flat() for p in payloads]), axis=0)
    np.testing.assert_array_equal(coordinate_median(spilled), expected)
    np.testing.assert_array_equal(coordinate_median(in_memory), expected)
    # read in blocks of a few columns, the answer is the same
    blocks = list(spilled.column_blocks(block_bytes=8 * 9 * 5))
    assert len(blocks) == (1207 + 4) // 5
    assert spilled.unflatten(coordinate_median(spilled))["a"].shape == (30, 40)
