"""Secure-sum backends: each reveals only Σ weight·payload and Σ weight to the server."""

from fedstream.secure.plain import PlainSum

__all__ = ["PlainSum"]
