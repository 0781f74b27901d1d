"""The plain streaming sum's inner loop: ``add_scaled`` in cache-sized chunks gives the
same bits as numpy's ``total += weight * values``, at every chunk boundary."""

import numpy as np
import pytest

from fedstream import Params, ParamsMismatchError, RoundFailedError
from fedstream.secure.plain import CHUNK, PlainSum, add_scaled, add_scaled_rows


@pytest.mark.parametrize("size", [5, CHUNK, CHUNK + 1, 2 * CHUNK + 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_chunked_sum_matches_numpy_bit_for_bit(size, dtype):
    rng = np.random.default_rng(size)
    values = rng.normal(size=size).astype(dtype)
    start = rng.normal(size=size)
    total = start.copy()
    add_scaled(total, values, 0.3)
    np.testing.assert_array_equal(total, start + 0.3 * values)


def test_arrays_of_any_shape_are_summed_entry_by_entry():
    values = np.arange(2 * CHUNK + 6, dtype=np.float32).reshape(2, -1)
    total = np.ones(values.shape)
    add_scaled(total, values, 2.0)
    np.testing.assert_array_equal(total, 1.0 + 2.0 * values)


def test_a_strided_total_is_refused_rather_than_summed_into_a_copy():
    total = np.zeros((2, 2 * CHUNK))[:, ::2]
    with pytest.raises(
        ValueError,
        match=r"^add_scaled needs a C-contiguous total \(it writes through a view\)$",
    ):
        add_scaled(total, np.ones(total.shape, np.float32), 1.0)


LIKE = Params({"w": np.zeros(2, np.float32), "b": np.zeros(1, np.float64)})


def test_the_plain_sum_weights_payloads_adds_extras_and_casts_back():
    acc = PlainSum(LIKE)
    acc.add(Params({"w": np.array([1.0, 2.0], np.float32), "b": np.array([4.0])}), 2.0, {"u": 0.5})
    acc.add(
        Params({"w": np.array([3.0, 0.0], np.float64), "b": np.array([1.0])}),
        1.0,
        {"u": 1.0, "v": 2.0},
    )
    result = acc.result(round_number=4)
    np.testing.assert_array_equal(result.total["w"], [5.0, 4.0])
    np.testing.assert_array_equal(result.total["b"], [9.0])
    assert result.total["w"].dtype == np.float32 and result.total["b"].dtype == np.float64
    assert (result.weight, result.count) == (3.0, 2)
    assert result.extras == {"u": 1.5, "v": 2.0}


def test_an_empty_or_weightless_round_is_an_error():
    empty = r"^round 4 failed: no client update was aggregated$"
    with pytest.raises(RoundFailedError, match=empty):
        PlainSum(LIKE).result(round_number=4)
    weightless = PlainSum(LIKE)
    weightless.add(LIKE, 0.0)
    with pytest.raises(RoundFailedError, match=r"^round 5 failed"):
        weightless.result(round_number=5)


def test_a_payload_of_another_layout_is_refused_by_name():
    with pytest.raises(ParamsMismatchError, match=r"^update payload names do not match"):
        PlainSum(LIKE).add(Params({"w": np.zeros(2)}), 1.0)


def test_one_client_of_weight_one_is_a_round():
    acc = PlainSum(LIKE)
    acc.add(LIKE.map(np.ones_like), 1.0)
    result = acc.result(round_number=1)
    assert (result.weight, result.count) == (1.0, 1)


ROW_SHAPES = [(1,), (1, 1), (2,), (3,), (10, 60), (CHUNK + 1,), (CHUNK + 5,)]


@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("count", [1, 2, 9, 100])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int64])
def test_a_block_of_rows_sums_to_the_bits_of_one_row_at_a_time(shape, count, dtype):
    # np.add.reduce would sum a single column (a (1,) entry, or a row's last chunk one
    # entry wide) pairwise from 9 rows on, and end a few ulps away; every row shape and
    # count must match the running sum exactly
    rng = np.random.default_rng(count * 7 + len(shape))
    if count * np.prod(shape) > 20 * CHUNK:
        count = 3  # keep the test small; the chunk boundary is what the long rows are for
    rows = (rng.normal(size=(count, *shape)) * 100).astype(dtype)
    weights = rng.integers(1, 50, count) * 1.37
    start = rng.normal(size=shape)
    one_by_one, together = start.copy(), start.copy()
    for row, weight in zip(rows, weights.tolist(), strict=True):
        add_scaled(one_by_one, row, weight)
    add_scaled_rows(together, rows, weights)
    assert one_by_one.tobytes() == together.tobytes()


def test_a_plain_sum_of_a_block_is_the_sum_of_its_rows_in_order():
    rng = np.random.default_rng(3)
    like = Params({"w": np.zeros((4, 3), np.float32), "b": np.zeros(1, np.float32)})
    payload = Params(
        {n: rng.normal(size=(6, *a.shape)).astype(np.float32) for n, a in like.items()}
    )
    weights = np.array([3.0, 1.0, 18.0, 2.5, 7.0, 1.0])
    rows, block = PlainSum(like), PlainSum(like)
    for k, weight in enumerate(weights.tolist()):
        rows.add(Params({n: a[k] for n, a in payload.items()}), weight)
    block.add_block(payload, weights)
    one, other = rows.result(1), block.result(1)
    assert one.total.bit_equal(other.total)
    assert (one.weight, one.count) == (other.weight, other.count) == (32.5, 6)


def test_a_block_of_another_layout_is_refused_by_name():
    block = Params({"w": np.zeros((2, 2), np.float32), "b": np.zeros((2, 2))})
    with pytest.raises(
        ValueError, match=r"^block payload\['b'\] has rows of shape \(2,\), expected \(1,\)$"
    ):
        PlainSum(LIKE).add_block(block, np.ones(2))
    with pytest.raises(ValueError, match=r"^block payload names \['w'\], expected \['w', 'b'\]$"):
        PlainSum(LIKE).add_block(Params({"w": np.zeros((2, 2))}), np.ones(2))
