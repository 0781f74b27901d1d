"""Pushing models to a serving process elsewhere (``POST /v1/models/publish``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedstream.errors import ConfigError


@dataclass(frozen=True)
class PublishTarget:
    """Where a training process pushes every round's model: a serving process's base
    ``url`` (``https://…`` for TLS), its publish ``token``, and, for a server certificate
    that the system's CAs do not vouch for, the ``ca_file`` (PEM) that signed it."""

    url: str
    token: str
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError("publish_to", self.url, "an http:// or https:// URL")
        if self.ca_file is not None and not self.url.startswith("https://"):
            raise ConfigError("publish_ca", self.ca_file, "an https:// publish URL to verify")


def publish(
    target: PublishTarget,
    version: int,
    architecture: Mapping[str, Any],
    metrics: Mapping[str, float],
    params: bytes,
    timeout_s: float = 30.0,
) -> bool:
    """Push one model version to the serving process at ``target``
    (``POST /v1/models/publish``); ``True`` if it was new there. Over https the server's
    certificate is verified (against ``target.ca_file`` if given). Uses only the standard
    library, so a training server needs no HTTP client package."""
    import ssl
    import urllib.request

    request = urllib.request.Request(
        f"{target.url.rstrip('/')}/v1/models/publish",
        data=params,
        method="POST",
        headers={
            "Authorization": f"Bearer {target.token}",
            "Content-Type": "application/octet-stream",
            "X-Model-Version": str(version),
            "X-Model-Architecture": json.dumps(dict(architecture)),
            "X-Model-Metrics": json.dumps(dict(metrics)),
        },
    )
    context = (
        ssl.create_default_context(cafile=target.ca_file)
        if target.url.startswith("https://")
        else None
    )
    with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return bool(answer["added"])
