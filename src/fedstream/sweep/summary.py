"""A sweep's result: per arm, the final headline metric of each seed's run, its median and
spread, and the median curve; as a table, ``sweep.json`` and an overlay plot."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedstream.sweep.spec import Sweep

HEADLINES = ("central_accuracy", "fed_accuracy", "central_loss", "fed_loss")


@dataclass(frozen=True)
class ArmSummary:
    """One arm over its seeds: the final ``metric`` of each seed's run (seed order), their
    median, min and max, the median ε of a DP arm, and the median curve by round."""

    arm: str
    metric: str
    seeds: tuple[int, ...]
    finals: tuple[float, ...]
    median: float
    low: float
    high: float
    epsilon: float | None
    rounds: tuple[int, ...]
    curve_median: tuple[float, ...]
    curve_low: tuple[float, ...]
    curve_high: tuple[float, ...]


def _rounds(folder: Path) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = json.loads((folder / "results.json").read_text())["rounds"]
    return rounds


def headline_metric(rounds: Sequence[dict[str, Any]]) -> str:
    """The first of ``HEADLINES`` the last round reports."""
    last = rounds[-1]["metrics"] if rounds else {}
    return next((m for m in HEADLINES if m in last), "train_loss")


def summarise(sweep: Sweep, folder: Path) -> list[ArmSummary]:
    """Each arm's summary from its runs' ``results.json`` under ``folder``."""
    by_arm: dict[str, list[tuple[int, list[dict[str, Any]]]]] = {}
    for name, arm, seed in sweep.runs():
        by_arm.setdefault(arm.name, []).append((seed, _rounds(folder / name)))
    first = next(iter(by_arm.values()))[0][1]
    metric = headline_metric(first)
    out = []
    for arm_name, runs in by_arm.items():
        finals = [rounds[-1]["metrics"][metric] for _, rounds in runs]
        epsilons = [
            rounds[-1]["metrics"]["dp_epsilon"]
            for _, rounds in runs
            if "dp_epsilon" in rounds[-1]["metrics"]
        ]
        numbers = sorted(
            {r["round"] for _, rounds in runs for r in rounds if metric in r["metrics"]}
        )
        per_round = [
            [
                r["metrics"][metric]
                for _, rounds in runs
                for r in rounds
                if r["round"] == n and metric in r["metrics"]
            ]
            for n in numbers
        ]
        out.append(
            ArmSummary(
                arm=arm_name,
                metric=metric,
                seeds=tuple(seed for seed, _ in runs),
                finals=tuple(finals),
                median=statistics.median(finals),
                low=min(finals),
                high=max(finals),
                epsilon=statistics.median(epsilons) if epsilons else None,
                rounds=tuple(numbers),
                curve_median=tuple(statistics.median(v) for v in per_round),
                curve_low=tuple(min(v) for v in per_round),
                curve_high=tuple(max(v) for v in per_round),
            )
        )
    return out


def write_summary(summaries: Sequence[ArmSummary], path: Path) -> None:
    """``sweep.json``: every arm's summary."""
    path.write_text(json.dumps([asdict(s) for s in summaries], indent=1))


def plot_overlay(summaries: Sequence[ArmSummary], path: Path, title: str) -> None:
    """Each arm's median curve over the seeds, with its min–max band, on one plot (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(8, 5), dpi=110)
    for summary in summaries:
        (line,) = axis.plot(
            summary.rounds, summary.curve_median, marker="o", markersize=3, label=summary.arm
        )
        axis.fill_between(
            summary.rounds, summary.curve_low, summary.curve_high, color=line.get_color(), alpha=0.2
        )
    axis.set_xlabel("round")
    axis.set_ylabel(
        f"{summaries[0].metric} (median over seeds, band: min–max)" if summaries else ""
    )
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
