"""The edges of the compressed wire formats: varint index lists of every width, the
smallest top-k, independent stochastic rounding, and broadcasts a lying or broken server
could send (a part missing, a part cut short, names holding the separator)."""

import numpy as np
import pytest

from fedstream import ConfigError, Params
from fedstream.compression import (
    Compression,
    CompressionError,
    decode_broadcast,
    decode_update,
    encode_broadcast,
    encode_update,
)
from fedstream.compression.codecs import (
    _randk_indices,
    _stochastic_round,
    decode_gaps,
    encode_gaps,
)


@pytest.mark.parametrize(
    "indices",
    [[], [0], [7], [0, 1, 2], [127, 128], [5, 2**14 + 5, 2**28 + 5, 2**31 + 9, 2**32 - 1]],
)
def test_index_lists_round_trip_through_their_varints(indices):
    index = np.array(indices, dtype=np.int64)
    blob = encode_gaps(index)
    decoded, end = decode_gaps(blob, 0, index.size)
    assert decoded.dtype == np.int64 and decoded.shape == (index.size,)
    np.testing.assert_array_equal(decoded, index)
    assert end == len(blob)  # the varints end exactly where the blob does
    prefixed, after = decode_gaps(b"\x00\x00" + blob + b"\x01", 2, index.size)
    np.testing.assert_array_equal(prefixed, index)
    assert after == 2 + len(blob)


def test_the_widest_gap_takes_five_bytes():
    assert len(encode_gaps(np.array([2**32 - 1]))) == 5
    assert len(encode_gaps(np.array([127]))) == 1 and len(encode_gaps(np.array([128]))) == 2


@pytest.mark.parametrize(
    ("blob", "count", "message"),
    [
        (encode_gaps(np.array([1, 2, 3]))[:-1], 3, r"^compressed update: 3 indices announced, 2 "
         r"found \(its length disagrees with its header\)$"),
        (bytes([0x80] * 5 + [0x01]), 1, "^compressed update: an index varint is longer "
         "than 5 bytes$"),
        (bytes([0x05, 0x00]), 2, "^compressed update: repeated indices$"),
    ],
)  # fmt: skip
def test_malformed_index_lists_are_refused_with_the_reason(blob, count, message):
    with pytest.raises(CompressionError, match=message):
        decode_gaps(blob, 0, count)


def test_top_k_keeps_at_least_one_entry_and_rounds_up():
    codec = Compression.parse("topk:0.01")
    assert (codec.kept(10), codec.kept(150), codec.kept(1000)) == (1, 2, 10)


def test_stochastic_rounding_draws_each_entry_independently():
    rounded = _stochastic_round(np.full(10_000, 2.5), np.random.default_rng(0))
    assert set(np.unique(rounded)) == {2.0, 3.0}
    assert rounded.mean() == pytest.approx(2.5, abs=0.02)


def test_random_k_indices_are_distinct():
    index = _randk_indices(100, 90, seed=3)
    assert np.unique(index).size == 90 and np.all(np.diff(index) > 0)


def model() -> Params:
    rng = np.random.default_rng(0)
    return Params({"w": rng.normal(size=(3, 4)).astype(np.float32), "head::bias": np.arange(2.0)})


def test_broadcast_codecs_are_reproducible_and_keep_names_with_the_separator():
    params = model()
    assert encode_broadcast(params, "none", 0) is params
    assert decode_broadcast(params, "none") is params
    half = encode_broadcast(params, "f16", 0)
    assert half["w::h"].dtype == np.float16
    assert list(decode_broadcast(half, "f16")) == ["w", "head::bias"]
    eight = encode_broadcast(params, "q8", 4)
    assert eight.bit_equal(encode_broadcast(params, "q8", 4))
    assert decode_broadcast(eight, "q8").spec == params.spec
    with pytest.raises(
        ConfigError, match=r"^broadcast='f8' is invalid: expected one of \['none', 'f16', 'q8'\]$"
    ):
        encode_broadcast(params, "f8", 0)


@pytest.mark.parametrize(
    ("codec", "damage", "message"),
    [
        ("q8", ("w::lo", None), r"^compressed 'w': entry 'w::lo' is missing$"),
        ("f16", ("w::h", None), r"^compressed 'w': entry 'w::h' is missing$"),
        ("q8", ("w::q", 11), r"^compressed 'w': 'w::q' holds 11 values, expected 12 \(its length "
         r"disagrees with the rest\)$"),
        ("f16", ("w::h", 5), r"^compressed 'w': 'w::h' holds 5 values, expected 12"),
    ],
)  # fmt: skip
def test_a_damaged_broadcast_is_refused_naming_the_part(codec, damage, message):
    key, keep = damage
    encoded = dict(encode_broadcast(model(), codec, 0).items())
    if keep is None:
        del encoded[key]
    else:
        encoded[key] = encoded[key].reshape(-1)[:keep]
    with pytest.raises(CompressionError, match=message):
        decode_broadcast(Params(encoded), codec)


def test_the_threshold_is_inclusive_and_only_sparsifiers_keep_a_residual():
    update = Params({"w": np.array([0.5, -0.5, 0.4999, 2.0], dtype=np.float32)})
    codec = Compression.parse("threshold:0.5")
    encoded, residual = encode_update(update, codec, None, 0)
    decoded = decode_update(encoded, update, codec, 0)
    np.testing.assert_array_equal(decoded["w"], [0.5, -0.5, 0.0, 2.0])
    np.testing.assert_allclose(residual["w"], [0.0, 0.0, 0.4999, 0.0])
    for spec in ("none", "q8", "q4", "qsgd:8"):
        assert encode_update(update, Compression.parse(spec), None, 0)[1] is None
