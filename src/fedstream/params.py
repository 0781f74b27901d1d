"""``Params``: the one container for model parameters, updates and gradients.

An ordered, immutable mapping of name → numpy array, with a flat-vector view, element-wise
arithmetic, and a wire format. Everything that crosses a process or machine boundary in
fedstream is a ``Params`` plus plain metadata.

Wire format
-----------
The encoding is byte-compatible with safetensors (an 8-byte little-endian header length, a
JSON header of ``{name: {dtype, shape, data_offsets}}`` padded with spaces to 8 bytes, then
the raw little-endian data), so a checkpoint written with :meth:`Params.to_bytes` opens in
any safetensors reader. The name order, which safetensors does not keep, travels in the
header's ``__metadata__``. :meth:`Params.from_bytes` validates every field and returns
arrays that are views into the given buffer: decoding copies nothing.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fedstream.errors import ParamsMismatchError, WireFormatError

Array = npt.NDArray[Any]

# safetensors dtype codes ↔ numpy dtypes (little-endian). BF16 has no numpy dtype.
_CODE_TO_DTYPE: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("bool"),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F64": np.dtype("<f8"),
}
_DTYPE_TO_CODE: dict[np.dtype[Any], str] = {dt: code for code, dt in _CODE_TO_DTYPE.items()}

_HEADER_LENGTH_BYTES = 8
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the same ceiling safetensors applies
_ORDER_KEY = "fedstream.order"


class Params(Mapping[str, Array]):
    """Ordered, immutable name → array mapping.

    Construction does not copy the arrays; fedstream never writes into them, and neither
    should a caller after handing them over. Arithmetic returns new ``Params`` and requires
    both operands to have the same names, shapes and order (see :meth:`check_compatible`).
    """

    __slots__ = ("_arrays",)
    __array_priority__: ClassVar[float] = 1000.0  # so ``np.float64(2) * params`` uses __rmul__

    def __init__(self, arrays: Mapping[str, npt.ArrayLike] | Sequence[tuple[str, npt.ArrayLike]]):
        items = arrays.items() if isinstance(arrays, Mapping) else arrays
        converted: dict[str, Array] = {}
        for name, value in items:
            if not isinstance(name, str) or not name:
                raise ParamsMismatchError(
                    f"parameter name {name!r} is invalid: expected a non-empty string"
                )
            if name in converted:
                raise ParamsMismatchError(f"parameter name {name!r} appears twice")
            converted[name] = np.asarray(value)
        self._arrays = converted

    # -- mapping -----------------------------------------------------------------------
    def __getitem__(self, name: str) -> Array:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {a.dtype}{list(a.shape)}" for n, a in self._arrays.items())
        return f"Params({inner})"

    # -- structure ---------------------------------------------------------------------
    @property
    def spec(self) -> tuple[tuple[str, tuple[int, ...], np.dtype[Any]], ...]:
        """(name, shape, dtype) of every entry, in order."""
        return tuple((n, a.shape, a.dtype) for n, a in self._arrays.items())

    @property
    def num_elements(self) -> int:
        return sum(a.size for a in self._arrays.values())

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())

    def check_compatible(
        self, other: Params, what: str = "params", check_dtype: bool = True
    ) -> None:
        """Raise ``ParamsMismatchError`` naming the first difference in names, shapes, dtypes."""
        if list(self._arrays) != list(other._arrays):
            missing = [n for n in self._arrays if n not in other._arrays]
            extra = [n for n in other._arrays if n not in self._arrays]
            if missing or extra:
                raise ParamsMismatchError(
                    f"{what} names do not match: missing {missing}, unexpected {extra}"
                )
            raise ParamsMismatchError(
                f"{what} names are in a different order: {list(other._arrays)}, "
                f"expected {list(self._arrays)}"
            )
        for name, mine in self._arrays.items():
            theirs = other._arrays[name]
            if mine.shape != theirs.shape:
                raise ParamsMismatchError(
                    f"{what}[{name!r}] has shape {theirs.shape}, expected {mine.shape}"
                )
            if check_dtype and mine.dtype != theirs.dtype:
                raise ParamsMismatchError(
                    f"{what}[{name!r}] has dtype {theirs.dtype}, expected {mine.dtype}"
                )

    # -- flat view ---------------------------------------------------------------------
    def flat(self, dtype: npt.DTypeLike | None = None) -> Array:
        """All entries concatenated into one new 1-D array (in ``dtype``, or the common one)."""
        arrays = [a.reshape(-1) for a in self._arrays.values()]
        if not arrays:
            return np.zeros(0, dtype=dtype or np.float32)
        return np.concatenate(arrays).astype(dtype, copy=False) if dtype else np.concatenate(arrays)

    @classmethod
    def from_flat(cls, vector: npt.ArrayLike, like: Params) -> Params:
        """Split a 1-D vector back into entries shaped and typed like ``like``."""
        flat = np.asarray(vector)
        if flat.ndim != 1 or flat.size != like.num_elements:
            raise ParamsMismatchError(
                f"flat vector has shape {flat.shape}, expected ({like.num_elements},)"
            )
        out: dict[str, Array] = {}
        start = 0
        for name, shape, dtype in like.spec:
            size = math.prod(shape)
            out[name] = flat[start : start + size].reshape(shape).astype(dtype, copy=False)
            start += size
        return cls(out)

    # -- arithmetic --------------------------------------------------------------------
    def map(self, fn: Callable[[Array], npt.ArrayLike]) -> Params:
        """Apply ``fn`` to every array, keeping names and order."""
        return Params({n: fn(a) for n, a in self._arrays.items()})

    def zip_map(self, other: Params, fn: Callable[[Array, Array], npt.ArrayLike]) -> Params:
        """Apply ``fn`` pairwise to entries of the same name; the two must be compatible."""
        self.check_compatible(other, "operand", check_dtype=False)
        return Params({n: fn(a, other._arrays[n]) for n, a in self._arrays.items()})

    def zeros_like(self) -> Params:
        return self.map(np.zeros_like)

    def __add__(self, other: Params) -> Params:
        return self.zip_map(other, np.add)

    def __sub__(self, other: Params) -> Params:
        return self.zip_map(other, np.subtract)

    def __mul__(self, other: Params | float) -> Params:
        if isinstance(other, Params):
            return self.zip_map(other, np.multiply)
        return self.map(lambda a: a * other)

    __rmul__ = __mul__

    def __truediv__(self, other: Params | float) -> Params:
        if isinstance(other, Params):
            return self.zip_map(other, np.divide)
        return self.map(lambda a: a / other)

    def __neg__(self) -> Params:
        return self.map(np.negative)

    def norm(self) -> float:
        """Euclidean norm over all entries, as if flattened into one vector."""
        return math.sqrt(sum(float(np.vdot(a, a).real) for a in self._arrays.values()))

    def is_finite(self) -> bool:
        return all(bool(np.isfinite(a).all()) for a in self._arrays.values())

    def bit_equal(self, other: Params) -> bool:
        """True when names, order, shapes, dtypes and every byte agree."""
        if self.spec != other.spec:
            return False
        return all(a.tobytes() == other._arrays[n].tobytes() for n, a in self._arrays.items())

    def copy(self) -> Params:
        """A deep copy whose arrays are owned and writable."""
        return self.map(np.array)

    # -- wire format -------------------------------------------------------------------
    def _header(self) -> bytes:
        return _encode_header(self.spec)

    def encode_chunks(self) -> list[bytes | memoryview]:
        """The encoding as a list of buffers (header, then each array's memory), for senders
        that can write several buffers without joining them first."""
        header = self._header()
        chunks: list[bytes | memoryview] = [struct.pack("<Q", len(header)), header]
        for array in self._arrays.values():
            little = array.astype(array.dtype.newbyteorder("<"), copy=False)
            flat: Any = np.ascontiguousarray(little).reshape(-1)  # numpy arrays are buffers
            chunks.append(memoryview(flat).cast("B"))
        return chunks

    def to_bytes(self) -> bytes:
        """Encode names, order, dtypes, shapes and data exactly (safetensors layout)."""
        return b"".join(self.encode_chunks())

    def wire_size(self) -> int:
        """Length in bytes of :meth:`to_bytes`, without building the data part."""
        return _HEADER_LENGTH_BYTES + len(self._header()) + self.nbytes

    def received(self) -> Params:
        """What a receiver decodes from :meth:`to_bytes`, made without encoding: the same
        names, order, shapes and values, copied into little-endian, C-contiguous, read-only
        arrays, after the same check that the wire can carry every dtype. An in-process hop
        counts its bytes with :meth:`wire_size` and uses this in place of the round trip
        (about a tenth of its cost on a small model)."""
        out: dict[str, Array] = {}
        for name, array in self._arrays.items():
            if array.dtype in _DTYPE_TO_CODE:  # a wire dtype, already little-endian
                copy = array.copy(order="C")
            else:
                self._header()  # raises WireFormatError for a dtype the wire cannot carry
                copy = np.array(array, dtype=array.dtype.newbyteorder("<"), order="C")
            copy.flags.writeable = False
            out[name] = copy
        received = Params.__new__(Params)  # the names were checked when self was made
        received._arrays = out
        return received

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Params:
        """Decode :meth:`to_bytes` output (or any safetensors buffer) without copying data.

        Raises ``WireFormatError`` naming what is wrong when the buffer is truncated, has
        trailing bytes, or its header is not valid JSON, names an unknown dtype, a shape
        that disagrees with its byte range, or ranges that overlap or leave gaps.
        """
        view = memoryview(data).cast("B")
        total = len(view)
        if total < _HEADER_LENGTH_BYTES:
            raise WireFormatError(
                f"params buffer is truncated: {total} bytes, expected at least "
                f"{_HEADER_LENGTH_BYTES} for the header length"
            )
        (header_len,) = struct.unpack_from("<Q", view, 0)
        if header_len > _MAX_HEADER_BYTES:
            raise WireFormatError(
                f"params header length is {header_len} bytes, expected at most {_MAX_HEADER_BYTES}"
            )
        data_start = _HEADER_LENGTH_BYTES + header_len
        if data_start > total:
            raise WireFormatError(
                f"params buffer is truncated: header claims {header_len} bytes but only "
                f"{total - _HEADER_LENGTH_BYTES} follow"
            )
        entries, data_needed = _decode_header(bytes(view[_HEADER_LENGTH_BYTES:data_start]))
        data_len = total - data_start
        if data_needed != data_len:
            kind = "truncated" if data_needed > data_len else "followed by trailing bytes"
            raise WireFormatError(
                f"params buffer is {kind}: header describes {data_needed} data bytes, "
                f"buffer holds {data_len}"
            )
        return cls(
            [
                (
                    name,
                    np.frombuffer(
                        view, dtype=dtype, count=math.prod(shape), offset=data_start + begin
                    ).reshape(shape),
                )
                for name, dtype, shape, begin in entries
            ]
        )


Spec = tuple[tuple[str, tuple[int, ...], np.dtype[Any]], ...]
Entries = tuple[tuple[str, np.dtype[Any], tuple[int, ...], int], ...]


@functools.lru_cache(maxsize=64)
def _encode_header(spec: Spec) -> bytes:
    """The JSON header for a layout; cached, since a run sends one layout many times."""
    # the order needs saying only when there is more than one entry (a compressed update
    # is one byte string, and its header is a good part of what it costs)
    header: dict[str, Any] = (
        {"__metadata__": {_ORDER_KEY: json.dumps([n for n, _, _ in spec])}} if len(spec) > 1 else {}
    )
    offset = 0
    for name, shape, dtype in spec:
        code = _DTYPE_TO_CODE.get(dtype.newbyteorder("<"))
        if code is None:
            raise WireFormatError(
                f"parameter {name!r} has dtype {dtype}, which the wire format "
                f"cannot carry: expected one of {sorted(_CODE_TO_DTYPE)}"
            )
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {
            "dtype": code,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    return raw + b" " * (-len(raw) % 8)


@functools.lru_cache(maxsize=64)
def _decode_header(raw: bytes) -> tuple[Entries, int]:
    """Validate a header; return (name, dtype, shape, begin) in order and the data length.

    Cached by the header's bytes: a run receives one layout many times, and a header that
    failed validation raises again (exceptions are not cached).
    """
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"params header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise WireFormatError(f"params header is a {type(header).__name__}, expected an object")
    metadata = header.pop("__metadata__", {})
    parsed = {name: _parse_entry(name, entry) for name, entry in header.items()}
    expected_start = 0
    for name, (_, _, begin, end) in sorted(parsed.items(), key=lambda e: e[1][2]):
        if begin != expected_start:
            raise WireFormatError(
                f"params entry {name!r} starts at byte {begin}, expected {expected_start} "
                "(entries must be contiguous and must not overlap)"
            )
        expected_start = end
    order = _parse_order(metadata, list(parsed))
    entries = tuple((n, parsed[n][0], parsed[n][1], parsed[n][2]) for n in order)
    return entries, expected_start


def _parse_entry(name: str, entry: object) -> tuple[np.dtype[Any], tuple[int, ...], int, int]:
    if not isinstance(entry, dict):
        raise WireFormatError(f"params entry {name!r} is {entry!r}, expected an object")
    code = entry.get("dtype")
    if code not in _CODE_TO_DTYPE:
        raise WireFormatError(
            f"params entry {name!r} has dtype {code!r}, expected one of {sorted(_CODE_TO_DTYPE)}"
        )
    dtype = _CODE_TO_DTYPE[code]
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise WireFormatError(
            f"params entry {name!r} has shape {shape!r}, expected a list of non-negative integers"
        )
    offsets = entry.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and o >= 0 for o in offsets)
        or offsets[1] < offsets[0]
    ):
        raise WireFormatError(
            f"params entry {name!r} has data_offsets {offsets!r}, expected [begin, end] "
            "with 0 <= begin <= end"
        )
    begin, end = offsets
    expected = math.prod(shape) * dtype.itemsize
    if end - begin != expected:
        raise WireFormatError(
            f"params entry {name!r} spans {end - begin} bytes, expected {expected} for "
            f"shape {shape} of {code}"
        )
    return dtype, tuple(shape), begin, end


def _parse_order(metadata: object, names: list[str]) -> list[str]:
    if not isinstance(metadata, dict) or _ORDER_KEY not in metadata:
        return names
    try:
        order = json.loads(metadata[_ORDER_KEY])
    except (TypeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"params metadata {_ORDER_KEY!r} is not valid JSON: {exc}") from exc
    if not isinstance(order, list) or sorted(order) != sorted(names):
        raise WireFormatError(
            f"params metadata {_ORDER_KEY!r} lists {order!r}, expected the entries {sorted(names)}"
        )
    return order
