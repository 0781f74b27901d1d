"""Simulated federated runs in one process."""

from fedstream.simulation.baselines import centralised_baseline, local_only_baseline
from fedstream.simulation.config import SimulationConfig, from_mapping, load_toml
from fedstream.simulation.engine import SimulationResult, build, build_dataset, simulate
from fedstream.simulation.presets import PRESETS, preset

__all__ = [
    "PRESETS",
    "SimulationConfig",
    "SimulationResult",
    "build",
    "build_dataset",
    "centralised_baseline",
    "from_mapping",
    "load_toml",
    "local_only_baseline",
    "preset",
    "simulate",
]
