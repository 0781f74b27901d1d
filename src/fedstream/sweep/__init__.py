"""Sweeps: one run per combination of a grid of settings and per seed, run in parallel and
resumably, summarised as medians and spreads over seeds (``fedstream sweep``)."""

from fedstream.sweep.execute import run_sweep
from fedstream.sweep.spec import Arm, Sweep, load_sweep, sweep_from_mapping
from fedstream.sweep.summary import ArmSummary, plot_overlay, summarise

__all__ = [
    "Arm",
    "ArmSummary",
    "Sweep",
    "load_sweep",
    "plot_overlay",
    "run_sweep",
    "summarise",
    "sweep_from_mapping",
]
