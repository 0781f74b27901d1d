"""A sweep file: the settings every run shares (a table per section, as in a run file),
a ``[grid]`` of settings to vary (``"section.name" = [values]``), and ``seeds``.

    seeds = [0, 1, 2]

    [grid]
    "strategy.name" = ["fedavg", "fedprox"]
    "client.lr" = [0.1, 0.3]

    [run]
    rounds = 20

Every combination of the grid's values is an arm; each arm runs once per seed. Each run's
config is checked before any run starts, and an error names the arm.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedstream.errors import ConfigError
from fedstream.simulation.config import SimulationConfig, from_mapping, load_toml, merge


@dataclass(frozen=True)
class Arm:
    """One combination of the grid's values: ``(("strategy.name", "fedprox"), …)``."""

    values: tuple[tuple[str, Any], ...]

    @property
    def name(self) -> str:
        """``strategy.name=fedprox client.lr=0.1`` (``base`` for an empty grid)."""
        return " ".join(f"{k}={v}" for k, v in self.values) or "base"

    @property
    def slug(self) -> str:
        """The name as a folder name: ``fedprox-lr0.1``."""
        parts = [
            f"{k.rpartition('.')[2] if not isinstance(v, str) else ''}{v}" for k, v in self.values
        ]
        return re.sub(r"[^A-Za-z0-9_.+-]+", "_", "-".join(parts)) or "base"

    def settings(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, value in self.values:
            section, _, name = key.partition(".")
            out.setdefault(section, {})[name] = value
        return out


@dataclass(frozen=True)
class Sweep:
    """The shared settings by section, the grid (key → values) and the seeds."""

    base: Mapping[str, Mapping[str, Any]]
    grid: Mapping[str, Sequence[Any]]
    seeds: tuple[int, ...]

    def arms(self) -> list[Arm]:
        """Every combination of the grid's values, in the grid's order."""
        keys = list(self.grid)
        return [
            Arm(tuple(zip(keys, combo, strict=True)))
            for combo in itertools.product(*(self.grid[k] for k in keys))
        ]

    def config(self, arm: Arm, seed: int) -> SimulationConfig:
        """The validated config of ``arm`` at ``seed``; an error names the arm."""
        values = merge(merge(self.base, arm.settings()), {"execution": {"seed": seed}})
        try:
            return from_mapping(values, source="sweep")
        except ConfigError as exc:
            raise ConfigError(exc.field, exc.value, f"{exc.expected} (in arm {arm.name})") from None

    def runs(self) -> list[tuple[str, Arm, int]]:
        """(run folder name, arm, seed) for every run, arms in order, seeds within."""
        return [
            (f"{i:02d}-{arm.slug}-seed{seed}", arm, seed)
            for i, arm in enumerate(self.arms())
            for seed in self.seeds
        ]


def sweep_from_mapping(values: Mapping[str, Any]) -> Sweep:
    """A sweep from a sweep file's contents; every run's config is checked here."""
    values = dict(values)
    seeds = values.pop("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ConfigError("seeds", seeds, "a list of distinct integers >= 0")
    grid = values.pop("grid", {})
    if not isinstance(grid, dict):
        raise ConfigError("grid", grid, 'a table of "section.name" = [values]')
    for key, options in grid.items():
        if "." not in key:
            raise ConfigError(f"grid.{key}", options, 'a key "section.name", e.g. "client.lr"')
        if not isinstance(options, list) or not options:
            raise ConfigError(f"grid.{key}", options, "a non-empty list of values to try")
        if key == "execution.seed":
            raise ConfigError(f"grid.{key}", options, "seeds = [...] at the top of the file")
    sweep = Sweep(base=values, grid=grid, seeds=tuple(seeds))
    for arm in sweep.arms():
        sweep.config(arm, seeds[0])  # every arm is valid before any run starts
    return sweep


def load_sweep(path: Path) -> Sweep:
    """Read and check a sweep file."""
    return sweep_from_mapping(load_toml(path))
