"""Arrays made once and read back from fedstream's cache."""

import numpy as np

from fedstream.data.cache import cache_dir, cached_arrays


def test_arrays_are_made_once_read_back_equal_and_a_damaged_file_is_made_again(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("FEDSTREAM_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    calls = []

    def make() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"x": np.arange(6, dtype=np.int64).reshape(2, 3), "names": np.array(["a", "bc"])}

    path = cache_dir() / "things" / "made.npz"
    first = cached_arrays(path, make)
    again = cached_arrays(path, make)
    assert len(calls) == 1  # read back, not made again
    for name in ("x", "names"):
        np.testing.assert_array_equal(again[name], first[name])
        assert again[name].dtype == first[name].dtype
    assert list(path.parent.iterdir()) == [path]  # no partial file left beside it
    path.write_bytes(b"PK\x03\x04 not a whole archive")
    mended = cached_arrays(path, make)
    assert len(calls) == 2
    np.testing.assert_array_equal(mended["x"], first["x"])
    np.testing.assert_array_equal(cached_arrays(path, make)["names"], ["a", "bc"])
    assert len(calls) == 2
