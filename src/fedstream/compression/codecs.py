"""Compressed updates and broadcasts: sparsification with error feedback, quantisation, and
their composition, as pure functions from ``Params`` to ``Params`` on the wire.

Uplink (client → server), per tensor, in this order:

1. **residual**: with a sparsifier, the client first adds what earlier rounds did not send
   (error feedback, Seide et al. 2014; Karimireddy et al. 2019), and keeps what this round
   does not send, quantisation error included, as the next residual;
2. **sparsify**: ``topk:f`` sends the fraction f of entries largest in magnitude,
   ``randk:f`` a random fraction f whose indices the server regenerates from the task's
   seed (so no indices travel), and ``threshold:τ`` the entries with |x| ≥ τ;
3. **quantise** what is sent: ``q8`` or ``q4`` is uniform between the min and max, with
   stochastic rounding, which keeps it unbiased. ``qsgd:s`` is QSGD (Alistarh et al. 2017):
   the L2 norm, then each entry as a sign and one of s levels, stochastically rounded.

A spec combines one of each with ``+``: ``topk:0.01+q8``. The update is compressed as one
flat vector and sent as one byte string (layout below, at ``encode_update``). The decoder
checks every field, so indices out of range, a length that disagrees with the header, or
values that decode to NaN/Inf are refused with the reason.

Broadcast (server → clients): ``f16`` (half precision) or ``q8`` of the global model. The
encoded form describes itself: an empty ``w::t`` array of shape (0, *shape) carries the
tensor's dtype and shape in the header at no cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fedstream.errors import ConfigError, FedstreamError
from fedstream.params import Params

Sparsifier = Literal["none", "topk", "randk", "threshold"]
Quantiser = Literal["none", "q8", "q4", "qsgd"]
BROADCASTS = ("none", "f16", "q8")
_RANDK_STREAM = 0x52414E44
_ROUNDING_STREAM = 0x51554E54


class CompressionError(FedstreamError, ValueError):
    """A compressed payload is malformed: missing entries, indices out of range, lengths
    that disagree, values that decode to NaN or Inf."""


@dataclass(frozen=True)
class Compression:
    """An uplink codec: at most one sparsifier, then at most one quantiser.

    ``amount`` is the fraction kept (topk, randk) or the threshold τ; ``levels`` the QSGD
    levels s. ``Compression.parse("topk:0.01+q8")`` reads the spec a user writes.
    """

    sparsifier: Sparsifier = "none"
    amount: float = 0.0
    quantiser: Quantiser = "none"
    levels: int = 0

    @classmethod
    def parse(cls, spec: str) -> Compression:
        sparsifier: Sparsifier = "none"
        quantiser: Quantiser = "none"
        amount, levels = 0.0, 0
        for part in [p.strip() for p in spec.split("+") if p.strip()]:
            name, _, argument = part.partition(":")
            if name == "none" and not argument:
                continue
            if name in ("topk", "randk", "threshold") and sparsifier == "none":
                try:
                    amount = float(argument)
                except ValueError:
                    raise ConfigError("compression", spec, f"a number after '{name}:'") from None
                valid = 0 < amount <= 1 if name != "threshold" else amount > 0
                if not math.isfinite(amount) or not valid:
                    expected = "in (0, 1]" if name != "threshold" else "> 0"
                    raise ConfigError("compression", spec, f"{name}'s amount {expected}")
                sparsifier = name  # type: ignore[assignment]
            elif name in ("q8", "q4") and not argument and quantiser == "none":
                quantiser = name  # type: ignore[assignment]
            elif name == "qsgd" and quantiser == "none":
                try:
                    levels = int(argument or "16")
                except ValueError:
                    raise ConfigError("compression", spec, "qsgd:<levels>, 1 … 127") from None
                if not 1 <= levels <= 127:
                    raise ConfigError("compression", spec, "qsgd levels from 1 to 127")
                quantiser = "qsgd"
            else:
                raise ConfigError(
                    "compression",
                    spec,
                    "at most one of topk:f, randk:f, threshold:τ and at most one of q8, q4, "
                    "qsgd:s, joined by '+', e.g. 'topk:0.01+q8'",
                )
        return cls(sparsifier, amount, quantiser, levels)

    @property
    def spec(self) -> str:
        parts = []
        if self.sparsifier != "none":
            parts.append(f"{self.sparsifier}:{self.amount:g}")
        if self.quantiser == "qsgd":
            parts.append(f"qsgd:{self.levels}")
        elif self.quantiser != "none":
            parts.append(self.quantiser)
        return "+".join(parts) or "none"

    @property
    def keeps_residual(self) -> bool:
        """Sparsifiers keep what they did not send on the client (error feedback)."""
        return self.sparsifier != "none"

    @property
    def secure_sum_compatible(self) -> bool:
        """Whether a masked or encrypted sum can add these updates: each client's sparse
        support differs, so sparsified updates cannot be summed without their indices;
        quantised ones are dequantised on the client first and sum like any other."""
        return self.sparsifier == "none"

    def kept(self, size: int) -> int:
        """How many entries of a tensor of ``size`` a top-k or random-k keeps."""
        return max(1, math.ceil(self.amount * size))


# -- the pieces ------------------------------------------------------------------------------


def _stochastic_round(x: npt.NDArray[np.float64], rng: np.random.Generator) -> npt.NDArray[Any]:
    low = np.floor(x)
    return low + (rng.random(x.shape) < (x - low))


def _quantise(
    values: npt.NDArray[np.float64], quantiser: Quantiser, levels: int, rng: np.random.Generator
) -> tuple[dict[str, npt.NDArray[Any]], npt.NDArray[np.float64]]:
    """Wire entries (suffix → array) for ``values``, and what the receiver will decode."""
    if quantiser == "none":
        v32 = values.astype(np.float32)
        return {"v": v32}, v32.astype(np.float64)
    if quantiser == "qsgd":
        norm = float(np.linalg.norm(values))
        if norm == 0:
            level = np.zeros(values.shape)
        else:
            level = _stochastic_round(np.abs(values) / norm * levels, rng)
        signed = (np.sign(values) * level).astype(np.int8)
        norm32 = np.float32(norm)
        return {"s": signed, "norm": np.array([norm32])}, float(norm32) * signed / levels
    bits = 8 if quantiser == "q8" else 4
    top = (1 << bits) - 1
    low = np.float32(values.min()) if values.size else np.float32(0)
    high = np.float32(values.max()) if values.size else np.float32(0)
    step = np.float32((float(high) - float(low)) / top)
    if step > 0:
        codes = np.clip(_stochastic_round((values - float(low)) / float(step), rng), 0, top)
    else:
        codes = np.zeros(values.shape)
    codes = codes.astype(np.uint8)
    decoded = float(low) + codes.astype(np.float64) * float(step)
    if bits == 4:
        padded = np.append(codes, np.uint8(0)) if codes.size % 2 else codes
        codes = (padded[0::2] | (padded[1::2] << 4)).astype(np.uint8)
    return {"q": codes, "lo": np.array([low]), "step": np.array([step])}, decoded


def _entry(
    entries: Mapping[str, npt.NDArray[Any]], suffix: str, name: str, size: int | None = None
) -> npt.NDArray[Any]:
    """``entries[suffix]``, refused with the reason if it is missing or holds other than
    ``size`` values (a payload from the network may lack a part or be cut short)."""
    if suffix not in entries:
        raise CompressionError(f"compressed {name!r}: entry '{name}::{suffix}' is missing")
    array = entries[suffix]
    if size is not None and array.size != size:
        raise CompressionError(
            f"compressed {name!r}: '{name}::{suffix}' holds {array.size} values, "
            f"expected {size} (its length disagrees with the rest)"
        )
    return array


def _dequantise(
    entries: Mapping[str, npt.NDArray[Any]],
    quantiser: Quantiser,
    levels: int,
    count: int,
    name: str,
) -> npt.NDArray[np.float64]:
    """The ``count`` values that ``entries`` encode; their sizes are the caller's to check."""
    if quantiser == "none":
        return entries["v"].astype(np.float64)
    if quantiser == "qsgd":
        signed = entries["s"].astype(np.float64)
        if np.any(np.abs(signed) > levels):
            raise CompressionError(f"compressed {name!r}: a QSGD level exceeds {levels}")
        return float(entries["norm"][0]) * signed / levels
    packed = entries["q"]
    if quantiser == "q4":
        codes = np.empty(packed.size * 2, dtype=np.uint8)
        codes[0::2], codes[1::2] = packed & 0x0F, packed >> 4
        packed = codes[:count]
    return float(entries["lo"][0]) + packed.astype(np.float64) * float(entries["step"][0])


def _randk_indices(size: int, kept: int, seed: int) -> npt.NDArray[np.int64]:
    rng = np.random.default_rng([seed, _RANDK_STREAM])
    return np.sort(rng.choice(size, size=kept, replace=False))


# -- uplink ------------------------------------------------------------------------------------
#
# The whole update is compressed as one flat vector (a global top-k, one quantisation range),
# and sent as one byte string, so that a small model's update is not swamped by per-tensor
# headers. Layout, little-endian: count (u32); the sorted indices as gaps between them in
# LEB128 varints (one byte for a gap under 128; absent for randk); then the values:
# float32, or q8/q4 as low (f32), step (f32) and codes (u8, 4-bit packed two per byte), or
# QSGD as norm (f32) and signed levels (i8).

PAYLOAD = "compressed"


def encode_gaps(index: npt.NDArray[np.int64]) -> bytes:
    """Sorted indices as LEB128 varints of the gaps between them (the first from 0)."""
    gaps = np.diff(index, prepend=0).astype(np.uint64)
    width = np.ones(gaps.size, dtype=np.int64)
    for k in range(1, 5):
        width += gaps >= (1 << (7 * k))
    out = np.zeros(int(width.sum()), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(width)[:-1]])
    for k in range(5):
        here = width > k
        group = ((gaps[here] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        more = (width[here] > k + 1).astype(np.uint8) << 7
        out[starts[here] + k] = group | more
    return out.tobytes()


def decode_gaps(blob: bytes, offset: int, count: int) -> tuple[npt.NDArray[np.int64], int]:
    """``count`` indices from the varints at ``offset``, and the offset after them."""
    if count == 0:
        return np.zeros(0, dtype=np.int64), offset
    tail = np.frombuffer(blob, dtype=np.uint8, offset=offset)
    ends = np.flatnonzero((tail & 0x80) == 0)
    if ends.size < count:
        raise CompressionError(
            f"compressed update: {count} indices announced, {ends.size} found (its length "
            "disagrees with its header)"
        )
    ends = ends[:count]
    starts = np.concatenate([[0], ends[:-1] + 1])
    widths = ends - starts + 1
    if widths.max() > 5:
        raise CompressionError("compressed update: an index varint is longer than 5 bytes")
    gaps = np.zeros(count, dtype=np.int64)
    for k in range(int(widths.max())):
        here = widths > k
        gaps[here] |= (tail[starts[here] + k].astype(np.int64) & 0x7F) << (7 * k)
    if count > 1 and np.any(gaps[1:] == 0):
        raise CompressionError("compressed update: repeated indices")
    return np.cumsum(gaps), offset + int(ends[-1]) + 1


def encode_update(
    payload: Params,
    codec: Compression,
    residual: Params | None,
    seed: int,
    mask: npt.NDArray[np.bool_] | None = None,
) -> tuple[Params, Params | None]:
    """(what the client sends, its next residual). ``seed`` is the task's seed. With a
    pruning ``mask`` (``pruning.kept_mask``) only the kept entries are encoded."""
    rng = np.random.default_rng([seed, _ROUNDING_STREAM])
    full = payload.flat(np.float64)
    if codec.keeps_residual and residual is not None:
        full = full + residual.flat(np.float64)
    kept_at = np.flatnonzero(mask) if mask is not None else None
    x = full if kept_at is None else full[kept_at]
    size = x.size
    if codec.sparsifier == "topk":
        kept = codec.kept(size)
        index: npt.NDArray[np.int64] | None = np.sort(
            np.argpartition(np.abs(x), size - kept)[size - kept :]
        )
    elif codec.sparsifier == "randk":
        index = _randk_indices(size, codec.kept(size), seed)
    elif codec.sparsifier == "threshold":
        index = np.flatnonzero(np.abs(x) >= codec.amount)
    else:
        index = None
    sent = x if index is None else x[index]
    wire, decoded = _quantise(sent, codec.quantiser, codec.levels, rng)
    parts = [np.array([sent.size], dtype="<u4").tobytes()]
    if index is not None and codec.sparsifier != "randk":
        parts.append(encode_gaps(index))
    for suffix in ("lo", "step", "norm", "v", "q", "s"):
        if suffix in wire:
            parts.append(np.ascontiguousarray(wire[suffix]).tobytes())
    blob = np.frombuffer(b"".join(parts), dtype=np.uint8)
    new_residual = None
    if codec.keeps_residual and index is not None:  # only sparsifiers keep a residual
        left = full.copy()
        left[index if kept_at is None else kept_at[index]] -= decoded
        new_residual = Params.from_flat(left, payload)
    return Params({PAYLOAD: blob}), new_residual


class _Reader:
    """Reads the fields of a compressed payload in order, refusing any overrun."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob
        self.at = 0

    def take(self, dtype: str | np.dtype[Any], count: int, what: str) -> npt.NDArray[Any]:
        size = np.dtype(dtype).itemsize * count
        if self.at + size > len(self.blob):
            raise CompressionError(
                f"compressed update: {what} needs {size} bytes at offset {self.at}, the payload "
                f"has {len(self.blob)} (its length disagrees with its header)"
            )
        out = np.frombuffer(self.blob, dtype=dtype, count=count, offset=self.at)
        self.at += size
        return out


def decode_update(
    encoded: Params,
    like: Params,
    codec: Compression,
    seed: int,
    mask: npt.NDArray[np.bool_] | None = None,
) -> Params:
    """The dense update shaped like ``like`` (zero where ``mask`` prunes); refuses a
    malformed payload with the reason."""
    if list(encoded) != [PAYLOAD]:
        raise CompressionError(
            f"compressed update: expected one entry {PAYLOAD!r}, got {list(encoded)[:5]}"
        )
    reader = _Reader(np.ascontiguousarray(encoded[PAYLOAD]).tobytes())
    size = like.num_elements if mask is None else int(mask.sum())
    count = int(reader.take("<u4", 1, "the count")[0])
    index: npt.NDArray[np.int64] | None
    if codec.sparsifier == "none":
        index = None
        if count != size:
            raise CompressionError(
                f"compressed update: count {count} disagrees with the model's {size} entries"
            )
    elif codec.sparsifier == "randk":
        index = _randk_indices(size, codec.kept(size), seed)
        if count != index.size:
            raise CompressionError(
                f"compressed update: count {count}, expected {index.size} for randk"
            )
    else:
        if count > size:
            raise CompressionError(f"compressed update: count {count} exceeds {size} entries")
        index, reader.at = decode_gaps(reader.blob, reader.at, count)
        if index.size and int(index.max()) >= size:
            raise CompressionError(
                f"compressed update: indices out of range (largest {int(index.max())}, the "
                f"model has {size} entries)"
            )
    entries: dict[str, npt.NDArray[Any]] = {}
    if codec.quantiser in ("q8", "q4"):
        entries["lo"] = reader.take("<f4", 1, "the low value")
        entries["step"] = reader.take("<f4", 1, "the step")
        codes = count if codec.quantiser == "q8" else (count + 1) // 2
        entries["q"] = reader.take("<u1", codes, "the codes")
    elif codec.quantiser == "qsgd":
        entries["norm"] = reader.take("<f4", 1, "the norm")
        entries["s"] = reader.take("<i1", count, "the levels")
    else:
        entries["v"] = reader.take("<f4", count, "the values")
    if reader.at != len(reader.blob):
        raise CompressionError(
            f"compressed update: {len(reader.blob) - reader.at} bytes left over (its length "
            "disagrees with its header)"
        )
    values = _dequantise(entries, codec.quantiser, codec.levels, count, "update")
    if not np.all(np.isfinite(values)):
        raise CompressionError("compressed update decodes to NaN or Inf")
    dense = values if index is None else np.zeros(size)
    if index is not None:
        dense[index] = values
    if mask is not None:
        scattered = np.zeros(like.num_elements)
        scattered[mask] = dense
        dense = scattered
    return Params.from_flat(dense, like)


# -- broadcast ---------------------------------------------------------------------------------


def encode_broadcast(params: Params, codec: str, seed: int) -> Params:
    """The global model as sent to clients: unchanged, in half precision, or 8-bit."""
    if codec not in BROADCASTS:
        raise ConfigError("broadcast", codec, f"one of {list(BROADCASTS)}")
    if codec == "none":
        return params
    rng = np.random.default_rng([seed, _ROUNDING_STREAM])
    entries: dict[str, npt.NDArray[Any]] = {}
    for name, array in params.items():
        entries[f"{name}::t"] = np.empty((0, *array.shape), dtype=array.dtype)
        if codec == "f16":
            entries[f"{name}::h"] = array.astype(np.float16)
        else:
            wire, _ = _quantise(array.astype(np.float64).ravel(), "q8", 0, rng)
            entries |= {f"{name}::{suffix}": value for suffix, value in wire.items()}
    return Params(entries)


def decode_broadcast(encoded: Params, codec: str) -> Params:
    """The model a client trains from, in each tensor's own dtype and shape."""
    if codec == "none":
        return encoded
    out: dict[str, npt.NDArray[Any]] = {}
    for key, template in encoded.items():
        name, _, suffix = key.rpartition("::")
        if suffix != "t":
            continue
        shape, dtype = template.shape[1:], template.dtype
        parts = {
            s: encoded[f"{name}::{s}"]
            for s in ("h", "q", "lo", "step")
            if f"{name}::{s}" in encoded
        }
        if codec == "f16":
            out[name] = _entry(parts, "h", name, math.prod(shape)).reshape(shape).astype(dtype)
        else:
            count = math.prod(shape)
            sizes = {"q": count, "lo": 1, "step": 1}
            checked = {part: _entry(parts, part, name, size) for part, size in sizes.items()}
            values = _dequantise(checked, "q8", 0, count, name)
            out[name] = values.reshape(shape).astype(dtype)
    return Params(out)
