"""Transports: how the round loop reaches clients."""

from fedstream.transport.base import Delivery, Transport
from fedstream.transport.inprocess import InProcessTransport

__all__ = ["Delivery", "InProcessTransport", "Transport"]
