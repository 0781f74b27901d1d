"""Run settings for tests, written flat (``rounds=4, strategy="fedprox"``) for brevity and
placed in their sections by the library's own table of old flat names
(``fedstream.simulation.config.flat_names``)."""

from __future__ import annotations

from typing import Any

from fedstream.simulation.config import SimulationConfig, flat_names, from_mapping, merge


def nested(*tables: dict[str, Any], **flat: Any) -> dict[str, dict[str, Any]]:
    """Settings by section: ``tables`` (already by section) then the ``flat`` ones."""
    out: dict[str, dict[str, Any]] = {}
    for table in tables:
        out = merge(out, table)
    names = flat_names()
    for key, value in flat.items():
        section, _, name = names[key].partition(".")
        out.setdefault(section, {})[name] = value
    return out


def make_config(**flat: Any) -> SimulationConfig:
    """A validated config from flat settings."""
    return from_mapping(nested(**flat))


def toml_text(**flat: Any) -> str:
    """A run file holding the flat settings."""
    return make_config(**flat).to_toml()
