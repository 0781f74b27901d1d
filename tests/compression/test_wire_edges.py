"""The edges of the compressed wire formats: varint index lists of every width, the
smallest top-k, independent stochastic rounding, and broadcasts a lying or broken server
could send (a part missing, a part cut short, names holding the separator)."""

import re
import warnings

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
    PAYLOAD,
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


def flat_update(size: int) -> Params:
    return Params({"w": np.linspace(-1.0, 1.0, size).astype(np.float32)})


def blob_of(encoded: Params) -> bytes:
    return encoded[PAYLOAD].tobytes()


def as_payload(blob: bytes) -> Params:
    return Params({PAYLOAD: np.frombuffer(blob, dtype=np.uint8)})


def short(what: str, needs: int, at: int) -> str:
    return (
        f"^compressed update: {what} needs {needs} bytes at offset {at}, the payload has {at} "
        r"\(its length disagrees with its header\)$"
    )


@pytest.mark.parametrize(
    ("spec", "keep", "message"),
    [
        ("none", 0, short("the count", 4, 0)),
        ("none", 4, short("the values", 32, 4)),
        ("q8", 4, short("the low value", 4, 4)),
        ("q8", 8, short("the step", 4, 8)),
        ("q8", 12, short("the codes", 8, 12)),
        ("q4", 12, short("the codes", 4, 12)),
        ("qsgd:8", 4, short("the norm", 4, 4)),
        ("qsgd:8", 8, short("the levels", 8, 8)),
    ],
)
def test_a_payload_cut_short_names_the_field_it_lacks(spec, keep, message):
    update = flat_update(8)
    codec = Compression.parse(spec)
    encoded, _ = encode_update(update, codec, None, 0)
    with pytest.raises(CompressionError, match=message):
        decode_update(as_payload(blob_of(encoded)[:keep]), update, codec, 0)


@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("spec", ["q4", "topk:1.0", "topk:0.5+q4", "randk:0.5"])
def test_even_and_odd_sizes_round_trip(spec, size):
    update = flat_update(size)
    codec = Compression.parse(spec)
    encoded, _ = encode_update(update, codec, None, 0)
    decoded = decode_update(encoded, update, codec, 0)
    assert decoded.spec == update.spec
    if codec.quantiser == "none":
        sent = decoded["w"] != 0
        np.testing.assert_array_equal(decoded["w"][sent], update["w"][sent])


def test_damaged_headers_are_refused_with_their_numbers():
    update = flat_update(8)
    topk, randk, qsgd = (Compression.parse(s) for s in ("topk:0.25", "randk:0.25", "qsgd:8"))
    blob = blob_of(encode_update(update, topk, None, 0)[0])
    with pytest.raises(CompressionError, match=r"^compressed update: count 9 exceeds 8 entries$"):
        decode_update(as_payload(np.uint32(9).tobytes() + blob[4:]), update, topk, 0)
    # one index, 8: just past the last entry
    past = np.uint32(1).tobytes() + encode_gaps(np.array([8])) + bytes(4)
    with pytest.raises(
        CompressionError,
        match=r"^compressed update: indices out of range \(largest 8, the model has 8 entries\)$",
    ):
        decode_update(as_payload(past), update, topk, 0)
    blob = blob_of(encode_update(update, randk, None, 0)[0])
    with pytest.raises(
        CompressionError, match=r"^compressed update: count 3, expected 2 for randk$"
    ):
        decode_update(as_payload(np.uint32(3).tobytes() + blob[4:]), update, randk, 0)
    with pytest.raises(
        CompressionError,
        match=r"^compressed update: 1 bytes left over \(its length disagrees with its header\)$",
    ):
        decode_update(as_payload(blob + b"\0"), update, randk, 0)
    levels = bytearray(blob_of(encode_update(update, qsgd, None, 0)[0]))
    levels[-1] = 100  # a QSGD level above s = 8
    with pytest.raises(CompressionError, match=r"^compressed 'update': a QSGD level exceeds 8$"):
        decode_update(as_payload(bytes(levels)), update, qsgd, 0)
    many = Params({f"p{i}": np.zeros(1) for i in range(7)})
    with pytest.raises(
        CompressionError,
        match=r"^compressed update: expected one entry 'compressed', got "
        r"\['p0', 'p1', 'p2', 'p3', 'p4'\]$",
    ):
        decode_update(many, update, topk, 0)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("topk", "a number after 'topk:'"),
        ("topk:0", "topk's amount in (0, 1]"),
        ("randk:1.5", "randk's amount in (0, 1]"),
        ("threshold:0", "threshold's amount > 0"),
        ("threshold:-1", "threshold's amount > 0"),
        ("qsgd:0", "qsgd levels from 1 to 127"),
        ("qsgd:128", "qsgd levels from 1 to 127"),
        ("qsgd:x", "qsgd:<levels>, 1 … 127"),
    ],
)
def test_bad_amounts_say_what_range_each_sparsifier_takes(spec, expected):
    message = f"compression='{spec}' is invalid: expected {expected}"
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        Compression.parse(spec)


def test_the_edges_of_the_amounts_and_none_parse():
    assert Compression.parse("none") == Compression()
    assert Compression.parse("none+q8") == Compression(quantiser="q8")
    assert Compression.parse("topk:1").amount == 1.0
    assert Compression.parse("threshold:2.5").amount == 2.5  # a threshold is not a fraction
    assert Compression.parse("qsgd:1").levels == 1
    assert Compression.parse("qsgd:127").levels == 127


def test_a_qsgd_level_may_equal_s():
    # one non-zero entry holds the whole norm, so its level is exactly s
    update = Params({"w": np.array([0.0, 0.0, 3.0, 0.0], dtype=np.float32)})
    codec = Compression.parse("qsgd:8")
    decoded = decode_update(encode_update(update, codec, None, 0)[0], update, codec, 0)
    np.testing.assert_array_equal(decoded["w"], [0.0, 0.0, 3.0, 0.0])


def test_a_broadcast_range_of_two_values_is_refused():
    encoded = dict(encode_broadcast(model(), "q8", 0).items())
    encoded["w::step"] = np.repeat(encoded["w::step"], 2)
    with pytest.raises(
        CompressionError, match=r"^compressed 'w': 'w::step' holds 2 values, expected 1"
    ):
        decode_broadcast(Params(encoded), "q8")


def test_the_generic_spec_error_lists_what_may_be_combined():
    spec = "topk:0.1+randk:0.1"
    message = (
        f"compression='{spec}' is invalid: expected at most one of topk:f, randk:f, "
        "threshold:τ and at most one of q8, q4, qsgd:s, joined by '+', e.g. 'topk:0.01+q8'"
    )
    with pytest.raises(ConfigError, match="^" + re.escape(message) + "$"):
        Compression.parse(spec)


@pytest.mark.parametrize("spec", ["topk:0.5", "topk:0.5+q8", "topk:0.5+q4", "topk:0.5+qsgd:4"])
def test_what_the_server_decodes_plus_what_the_client_keeps_is_the_update(spec):
    update = flat_update(9)
    codec = Compression.parse(spec)
    encoded, residual = encode_update(update, codec, None, 5)
    decoded = decode_update(encoded, update, codec, 5)
    np.testing.assert_allclose(decoded["w"] + residual["w"], update["w"], atol=1e-6)


def test_an_all_zero_update_survives_qsgd():
    update = Params({"w": np.zeros(5, np.float32)})
    codec = Compression.parse("qsgd:8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing divides by the zero norm
        decoded = decode_update(encode_update(update, codec, None, 0)[0], update, codec, 0)
    np.testing.assert_array_equal(decoded["w"], np.zeros(5))


def test_q8_keeps_the_ends_of_the_range_and_constant_tensors_exact():
    params = Params(
        {
            "w": np.array([-3.0, 0.25, 7.0, 1.5], np.float32),
            "flat": np.full(4, 2.5, np.float32),
            "none": np.zeros((0, 3), np.float32),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant tensor has step 0: nothing divides by it
        decoded = decode_broadcast(encode_broadcast(params, "q8", 1), "q8")
    assert decoded["w"][0] == -3.0 and decoded["w"][2] == pytest.approx(7.0, abs=1e-5)
    np.testing.assert_array_equal(decoded["flat"], np.full(4, 2.5))
    assert decoded["none"].shape == (0, 3)


def test_q4_pads_an_odd_count_with_a_zero_nibble():
    update = Params({"w": np.array([0.0, 1.0, 1.0], np.float32)})
    blob = encode_update(update, Compression.parse("q4"), None, 0)[0][PAYLOAD].tobytes()
    assert blob[-1] >> 4 == 0  # the third code's partner is padding


def test_a_flattened_half_precision_part_is_reshaped():
    encoded = dict(encode_broadcast(model(), "f16", 0).items())
    encoded["w::h"] = encoded["w::h"].reshape(-1)
    assert decode_broadcast(Params(encoded), "f16")["w"].shape == (3, 4)


def test_a_payload_that_decodes_to_nan_is_refused_in_so_many_words():
    update = flat_update(2)
    codec = Compression.parse("none")
    bad = np.uint32(2).tobytes() + np.array([np.nan, 1.0], "<f4").tobytes()
    with pytest.raises(CompressionError, match=r"^compressed update decodes to NaN or Inf$"):
        decode_update(as_payload(bad), update, codec, 0)


def test_with_a_pruning_mask_the_residual_lands_on_the_kept_entries():
    update = Params({"w": np.array([6.0, 1.0, -5.0, 2.0, 9.0, -3.0], np.float32)})
    mask = np.array([True, False, True, True, False, True])
    codec = Compression.parse("topk:0.5")  # 2 of the 4 kept entries: 6 and -5
    encoded, residual = encode_update(update, codec, None, 0, mask)
    decoded = decode_update(encoded, update, codec, 0, mask)
    np.testing.assert_array_equal(decoded["w"], [6.0, 0.0, -5.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(residual["w"], [0.0, 1.0, 0.0, 2.0, 9.0, -3.0])
