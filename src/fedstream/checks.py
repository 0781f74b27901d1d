"""Small argument checks shared by every public entry point.

Each raises ``ConfigError`` naming the field, the value and what was expected.
"""

from __future__ import annotations

import math

from fedstream.errors import ConfigError


def positive(field: str, value: float) -> None:
    """``value`` must be a finite number > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ConfigError(field, value, "a finite number > 0")


def non_negative(field: str, value: float) -> None:
    """``value`` must be a finite number >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ConfigError(field, value, "a finite number >= 0")


def in_unit_interval(field: str, value: float, *, include_zero: bool, include_one: bool) -> None:
    """``value`` must lie in (0, 1), [0, 1), (0, 1] or [0, 1] as the flags say."""
    low = "[0" if include_zero else "(0"
    high = "1]" if include_one else "1)"
    ok = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value >= 0 if include_zero else value > 0)
        and (value <= 1 if include_one else value < 1)
    )
    if not ok:
        raise ConfigError(field, value, f"a number in {low}, {high}")


def positive_int(field: str, value: int) -> None:
    """``value`` must be an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(field, value, "an integer >= 1")


def non_negative_int(field: str, value: int) -> None:
    """``value`` must be an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(field, value, "an integer >= 0")


def one_of(field: str, value: object, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ConfigError(field, value, f"one of {sorted(choices)}")
