"""Simulated federated runs in one process."""

from fedstream.simulation.config import SimulationConfig, from_mapping, load_toml
from fedstream.simulation.engine import SimulationResult, build, simulate

__all__ = ["SimulationConfig", "SimulationResult", "build", "from_mapping", "load_toml", "simulate"]
