"""The plain streaming sum's inner loop: ``add_scaled`` in cache-sized chunks gives the
same bits as numpy's ``total += weight * values``, at every chunk boundary."""

import numpy as np
import pytest

from fedstream.secure.plain import CHUNK, add_scaled


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
