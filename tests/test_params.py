import json
import struct

import numpy as np
import pytest
import safetensors.numpy

from fedstream import Params, ParamsMismatchError, WireFormatError


def sample() -> Params:
    return Params(
        [
            ("layer.weight", np.arange(6, dtype=np.float32).reshape(2, 3)),
            ("layer.bias", np.array([1.5, -2.0], dtype=np.float64)),
            ("counter", np.array(7, dtype=np.int64)),  # 0-d
            ("mask", np.array([True, False, True])),
            ("half", np.array([[0.5]], dtype=np.float16)),
            ("empty", np.zeros((0, 4), dtype=np.int32)),
            ("a_last_but_sorted_first", np.array([3], dtype=np.uint8)),
        ]
    )


def test_round_trip_keeps_names_order_dtypes_shapes_and_values():
    params = sample()
    decoded = Params.from_bytes(params.to_bytes())
    assert list(decoded) == list(params)
    assert decoded.spec == params.spec
    assert decoded.bit_equal(params)


def test_wire_size_is_the_encoded_length():
    params = sample()
    assert params.wire_size() == len(params.to_bytes())


def test_received_is_what_the_round_trip_decodes_without_encoding():
    big_endian = np.arange(4, dtype=">f4").reshape(2, 2)
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]
    params = Params([*sample().items(), ("big", big_endian), ("strided", strided)])
    decoded, received = Params.from_bytes(params.to_bytes()), params.received()
    assert list(received) == list(decoded)
    assert received.spec == decoded.spec  # big-endian arrives little-endian, as on the wire
    assert received.bit_equal(decoded)
    for name, array in received.items():
        assert not array.flags.writeable and array.flags.c_contiguous, name
        assert not np.shares_memory(array, params[name]), name  # the sender may reuse its own


def test_received_refuses_what_the_wire_cannot_carry():
    with pytest.raises(WireFormatError, match="'when' has dtype datetime64"):
        Params({"when": np.array(["2026-12-07"], dtype="datetime64[D]")}).received()


def test_decoding_copies_nothing():
    wire = sample().to_bytes()
    decoded = Params.from_bytes(wire)
    source = np.frombuffer(wire, dtype=np.uint8)
    assert np.shares_memory(decoded["layer.weight"], source)


def test_encoding_is_readable_by_safetensors_and_the_reverse():
    params = sample()
    loaded = safetensors.numpy.load(params.to_bytes())
    for name in params:
        np.testing.assert_array_equal(loaded[name], params[name])
        assert loaded[name].dtype == params[name].dtype
    written = safetensors.numpy.save({"w": np.ones((2, 2), np.float32), "b": np.zeros(2)})
    back = Params.from_bytes(written)
    assert set(back) == {"w", "b"}
    np.testing.assert_array_equal(back["w"], np.ones((2, 2), np.float32))


@pytest.mark.parametrize("cut", [0, 3, 8, 20, -1, -9])
def test_truncated_bytes_are_refused(cut):
    wire = sample().to_bytes()
    with pytest.raises(WireFormatError, match="truncated"):
        Params.from_bytes(wire[:cut])


def test_every_truncation_is_refused():
    wire = Params({"w": np.arange(5, dtype=np.float32)}).to_bytes()
    for cut in range(len(wire)):
        with pytest.raises(WireFormatError):
            Params.from_bytes(wire[:cut])


def test_trailing_bytes_are_refused():
    with pytest.raises(WireFormatError, match="trailing"):
        Params.from_bytes(sample().to_bytes() + b"\x00")


def _with_header(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None),
        ({"w": {"dtype": "Q99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "dtype 'Q99'"),
        ({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "spans 8 bytes"),
        ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}}, b"\0" * 8, "shape"),
        ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "data_offsets"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            "contiguous",
        ),
        ({"w": "nope"}, b"", "expected an object"),
        (
            {
                "__metadata__": {"fedstream.order": '["x"]'},
                "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            },
            b"\0" * 8,
            "fedstream.order",
        ),
    ],
)
def test_malformed_headers_are_refused_with_the_reason(header, data, message):
    wire = _with_header(header, data)
    if message is None:
        assert Params.from_bytes(wire)["w"].shape == (2,)
        return
    with pytest.raises(WireFormatError, match=message):
        Params.from_bytes(wire)


def test_header_that_is_not_json_is_refused():
    wire = struct.pack("<Q", 4) + b"{no}"
    with pytest.raises(WireFormatError, match="not valid JSON"):
        Params.from_bytes(wire)


def test_absurd_header_length_is_refused_before_reading():
    with pytest.raises(WireFormatError, match="header length"):
        Params.from_bytes(struct.pack("<Q", 2**40))


def test_arithmetic_and_norm():
    a = Params({"x": np.array([1.0, 2.0]), "y": np.array([[2.0]])})
    b = Params({"x": np.array([0.5, 0.5]), "y": np.array([[1.0]])})
    np.testing.assert_array_equal((a + b)["x"], [1.5, 2.5])
    np.testing.assert_array_equal((a - b)["y"], [[1.0]])
    np.testing.assert_array_equal((2 * a)["x"], [2.0, 4.0])
    np.testing.assert_array_equal((a * 2)["y"], [[4.0]])
    np.testing.assert_array_equal((a / 2)["x"], [0.5, 1.0])
    np.testing.assert_array_equal((-a)["x"], [-1.0, -2.0])
    assert a.norm() == pytest.approx(3.0)  # sqrt(1 + 4 + 4)


def test_arithmetic_never_changes_the_operands():
    x = np.array([1.0, 2.0])
    a = Params({"x": x})
    _ = a + a
    _ = a * 3
    np.testing.assert_array_equal(x, [1.0, 2.0])


def test_flat_view_round_trips():
    params = Params({"a": np.arange(6.0).reshape(2, 3), "b": np.array([7.0])})
    flat = params.flat()
    np.testing.assert_array_equal(flat, [0, 1, 2, 3, 4, 5, 7])
    assert Params.from_flat(flat, params).bit_equal(params)
    with pytest.raises(ParamsMismatchError, match=r"expected \(7,\)"):
        Params.from_flat(np.zeros(6), params)


def test_mismatches_name_the_difference():
    a = Params({"w": np.zeros(2), "b": np.zeros(1)})
    with pytest.raises(ParamsMismatchError, match=r"missing \['b'\], unexpected \['c'\]"):
        a.check_compatible(Params({"w": np.zeros(2), "c": np.zeros(1)}))
    with pytest.raises(ParamsMismatchError, match=r"\['w'\] has shape \(3,\), expected \(2,\)"):
        a.check_compatible(Params({"w": np.zeros(3), "b": np.zeros(1)}))
    with pytest.raises(ParamsMismatchError, match="dtype float32, expected float64"):
        a.check_compatible(Params({"w": np.zeros(2, np.float32), "b": np.zeros(1)}))
    with pytest.raises(ParamsMismatchError, match="different order"):
        a.check_compatible(Params({"b": np.zeros(1), "w": np.zeros(2)}))


def test_bad_names_are_refused():
    with pytest.raises(ParamsMismatchError, match="non-empty string"):
        Params({"": np.zeros(1)})
    with pytest.raises(ParamsMismatchError, match="appears twice"):
        Params([("w", np.zeros(1)), ("w", np.zeros(1))])


def test_unencodable_dtype_is_named():
    with pytest.raises(WireFormatError, match="complex128"):
        Params({"z": np.zeros(2, np.complex128)}).to_bytes()


def test_header_length_past_two_to_the_63_is_refused_as_too_long():
    # an unsigned length: read as signed it would be negative and slip past the ceiling
    with pytest.raises(WireFormatError, match="header length is 18446744073709551615 bytes"):
        Params.from_bytes(struct.pack("<Q", 2**64 - 1))


def test_buffer_of_only_the_length_field_reaches_the_header_check():
    with pytest.raises(WireFormatError, match="not valid JSON"):
        Params.from_bytes(struct.pack("<Q", 0))


def test_truncation_and_trailing_messages_say_how_many_bytes():
    wire = Params({"w": np.zeros(2, np.float32)}).to_bytes()
    with pytest.raises(WireFormatError, match=r"^params buffer is truncated: header describes 8"):
        Params.from_bytes(wire[:-1])
    with pytest.raises(WireFormatError, match=r"is followed by trailing bytes: .* holds 9$"):
        Params.from_bytes(wire + b"\0")
    with pytest.raises(WireFormatError, match=r"claims 1000 bytes but only 3 follow"):
        Params.from_bytes(struct.pack("<Q", 1000) + b"abc")


F32_PAIR = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"dtype": "F32", "shape": 5, "data_offsets": [0, 8]}, "has shape 5, expected a list"),
        ({"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}, r"shape \[2.0\]"),
        ({"dtype": "F32", "shape": [2], "data_offsets": None}, "data_offsets None"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 16]}, r"data_offsets \[0, 8, 16\]"),
        ({"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}, "with 0 <= begin <= end$"),
        ({"dtype": "F32", "shape": [3], "data_offsets": [4, 12]}, "spans 8 bytes, expected 12"),
    ],
)
def test_malformed_entries_are_refused_naming_the_field(entry, message):
    with pytest.raises(WireFormatError, match=message):
        Params.from_bytes(_with_header({"w": entry}, b"\0" * 12))


def test_zero_sized_entries_decode():
    header = {
        "e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]},
        "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    }
    decoded = Params.from_bytes(_with_header(header, b"\0" * 8))
    assert decoded["e"].shape == (0, 3)
    assert decoded["w"].shape == (2,)


def test_metadata_without_an_order_keeps_the_header_order():
    header = {
        "__metadata__": {"format": "pt"},
        "b": F32_PAIR,
        "a": F32_PAIR | {"data_offsets": [8, 16]},
    }
    assert list(Params.from_bytes(_with_header(header, b"\0" * 16))) == ["b", "a"]


def test_order_in_metadata_decides_the_order():
    header = {
        "__metadata__": {"fedstream.order": '["b", "a"]'},
        "a": F32_PAIR,
        "b": F32_PAIR | {"data_offsets": [8, 16]},
    }
    decoded = Params.from_bytes(_with_header(header, np.arange(4, dtype=np.float32).tobytes()))
    assert list(decoded) == ["b", "a"]
    np.testing.assert_array_equal(decoded["b"], [2.0, 3.0])
    bad = header | {"__metadata__": {"fedstream.order": "7"}}
    with pytest.raises(WireFormatError, match="lists 7, expected the entries"):
        Params.from_bytes(_with_header(bad, b"\0" * 16))
    unparsable = header | {"__metadata__": {"fedstream.order": "[b"}}
    with pytest.raises(WireFormatError, match=r"'fedstream\.order' is not valid JSON"):
        Params.from_bytes(_with_header(unparsable, b"\0" * 16))


def test_elementwise_product_and_quotient_of_two_params():
    a = Params({"x": np.array([2.0, 6.0])})
    b = Params({"x": np.array([4.0, 3.0])})
    np.testing.assert_array_equal((a * b)["x"], [8.0, 18.0])
    np.testing.assert_array_equal((a / b)["x"], [0.5, 2.0])


def test_arithmetic_allows_mixed_dtypes_and_names_a_mismatched_operand():
    a = Params({"x": np.ones(2, np.float32)})
    total = a + Params({"x": np.ones(2, np.float64)})
    assert total["x"].dtype == np.float64
    with pytest.raises(ParamsMismatchError, match=r"^operand\['x'\] has shape \(3,\)"):
        _ = a + Params({"x": np.ones(3)})


def test_flat_keeps_or_converts_the_dtype():
    assert Params({}).flat().dtype == np.float32
    assert Params({}).flat(np.float64).dtype == np.float64
    assert Params({}).flat().shape == (0,)
    single = Params({"a": np.ones(2, np.float32), "b": np.ones(1, np.float32)})
    assert single.flat().dtype == np.float32
    assert single.flat(np.float64).dtype == np.float64
    assert Params({"a": np.ones(2)}).flat(np.float32).dtype == np.float32


def test_from_flat_splits_three_entries_into_views_of_the_vector():
    like = Params(
        {
            "a": np.zeros(2, np.float32),
            "b": np.zeros((1, 2), np.float32),
            "c": np.zeros(3, np.float32),
        }
    )
    vector = np.arange(7, dtype=np.float32)
    back = Params.from_flat(vector, like)
    np.testing.assert_array_equal(back["c"], [4.0, 5.0, 6.0])
    assert back["b"].shape == (1, 2)
    assert all(back[n].dtype == np.float32 for n in back)
    assert np.shares_memory(back["c"], vector)  # no copy when the dtype already agrees
    assert Params.from_flat(np.arange(7.0), like)["a"].dtype == np.float32


def test_encoding_references_the_arrays_without_copying():
    x = np.arange(4, dtype="<f4")
    chunks = Params({"x": x}).encode_chunks()
    assert np.shares_memory(np.frombuffer(chunks[-1], dtype=np.uint8), x)


def test_bit_equal_needs_the_same_layout():
    a = Params({"x": np.zeros(2, np.float32)})
    assert not a.bit_equal(Params({"x": np.zeros(2, np.float64)}))
    assert not a.bit_equal(Params({"y": np.zeros(2, np.float32)}))
    assert not a.bit_equal(Params({"x": np.array([0.0, 1.0], np.float32)}))
    assert a.bit_equal(a.copy())


def test_compatibility_messages_name_what_was_compared():
    a = Params({"w": np.zeros(2), "b": np.zeros(1)})
    with pytest.raises(
        ParamsMismatchError, match=r"^params names do not match: missing \['b'\], unexpected \[\]$"
    ):
        a.check_compatible(Params({"w": np.zeros(2)}))
    a.check_compatible(Params({"w": np.zeros(2, np.float32), "b": np.zeros(1)}), check_dtype=False)


def test_repr_lists_names_dtypes_and_shapes():
    params = Params({"w": np.zeros((2, 3), np.float32), "b": np.zeros(2)})
    assert repr(params) == "Params(w: float32[2, 3], b: float64[2])"


def test_finiteness_and_zeros():
    params = Params({"w": np.ones(2), "b": np.ones(1)})
    assert params.is_finite()
    assert not Params({"w": np.ones(2), "b": np.array([np.inf])}).is_finite()
    assert not Params({"w": np.array([1.0, np.nan])}).is_finite()
    zeros = params.zeros_like()
    assert zeros.spec == params.spec and zeros.norm() == 0.0
