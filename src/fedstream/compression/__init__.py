"""Compressed updates (sparsification with error feedback, quantisation) and broadcasts."""

from fedstream.compression.codecs import (
    BROADCASTS,
    Compression,
    CompressionError,
    decode_broadcast,
    decode_update,
    encode_broadcast,
    encode_update,
)

__all__ = [
    "BROADCASTS",
    "Compression",
    "CompressionError",
    "decode_broadcast",
    "decode_update",
    "encode_broadcast",
    "encode_update",
]
