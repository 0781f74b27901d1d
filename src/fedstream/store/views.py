"""A stored run as a person reads it: its strategy's name with privacy, secure sum and codec
(``fedavg + DP (client) + q8``), the settings that differ from the defaults, and a
round's headline result. Shared by ``fedstream runs`` and the dashboard."""

from __future__ import annotations

from typing import Any

from fedstream.errors import FedstreamError

HEADLINE = (("central_accuracy", "acc", "{:.3f}"), ("central_loss", "loss", "{:.4g}"))


def setting(config: dict[str, Any], section: str, name: str) -> Any:
    """A run's setting as its config.json holds it: by section (``config["run"]["rounds"]``),
    or flat in a run stored before the sections; ``""`` when absent."""
    table = config.get(section)
    if isinstance(table, dict) and name in table:
        return table[name]
    flat = "strategy" if (section, name) == ("strategy", "name") else name
    value = config.get(flat, "")
    return "" if isinstance(value, dict) else value


def data_name(run: dict[str, Any]) -> str:
    """What a stored run trains on: its app's import path, else the data name the run
    recorded (an app object's own name), else the built-in data set its config names."""
    config = run["config"]
    return str(
        setting(config, "model", "app") or run.get("data") or setting(config, "data", "dataset")
    )


def headline(metrics: dict[str, float]) -> str:
    """A round's result in a few characters: accuracy (else loss) on the held-out set,
    and ε for a DP run, e.g. ``acc 0.912, ε 3.21``."""
    parts = [
        f"{label} {form.format(metrics[key])}" for key, label, form in HEADLINE if key in metrics
    ][:1]
    if "dp_epsilon" in metrics:
        parts.append(f"ε {metrics['dp_epsilon']:.2f}")
    return ", ".join(parts)


def describe_config(config: dict[str, Any]) -> tuple[str, list[tuple[str, Any]]]:
    """A stored run's strategy as a person names it and every setting that differs from
    the defaults, as (``section.name``, value) pairs. A config this version cannot read (a
    run from an older one) gives its strategy name and its settings as stored."""
    from fedstream.simulation.config import SimulationConfig, from_mapping

    try:
        parsed = from_mapping(config, source="run store")
    except FedstreamError:
        flat = [(k, v) for k, v in sorted(config.items()) if not isinstance(v, dict)]
        return str(setting(config, "strategy", "name")), flat
    defaults = SimulationConfig().to_dict()
    changed = [
        (f"{section}.{name}", value)
        for section, values in parsed.to_dict().items()
        for name, value in values.items()
        if defaults.get(section, {}).get(name) != value
    ]
    return parsed.label, changed
