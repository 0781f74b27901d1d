"""Transports: how the round loop reaches clients."""

from fedstream.transport.base import Delivery, Transport
from fedstream.transport.faults import Dropouts
from fedstream.transport.inprocess import InProcessTransport
from fedstream.transport.scripted import ScriptedTransport

__all__ = ["Delivery", "Dropouts", "InProcessTransport", "ScriptedTransport", "Transport"]
