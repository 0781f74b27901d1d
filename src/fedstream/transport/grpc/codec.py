"""Task configs and results as the JSON headers of the gRPC messages."""

from __future__ import annotations

import dataclasses
from typing import Any

from fedstream.compression.codecs import Compression
from fedstream.transport.grpc.framing import ProtocolError
from fedstream.types import ClientPrivacy, FitConfig, SampleDP


def fit_config_to_dict(config: FitConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def fit_config_from_dict(data: Any) -> FitConfig:
    """A ``FitConfig`` from its JSON form; unknown or missing fields are a ``ProtocolError``."""
    try:
        values = dict(data)
        privacy = values.pop("privacy", None)
        sample_dp = values.pop("sample_dp", None)
        compression = values.pop("compression", None)
        local = values.pop("local_entries", ())
        if not isinstance(local, list | tuple) or not all(isinstance(n, str) for n in local):
            raise ValueError(f"local_entries={local!r}: expected a list of names")
        return FitConfig(
            **values,
            local_entries=tuple(local),
            privacy=ClientPrivacy(**privacy) if privacy is not None else None,
            sample_dp=SampleDP(**sample_dp) if sample_dp is not None else None,
            compression=Compression(**compression) if compression is not None else None,
        )
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"task config is invalid: {exc}") from None
