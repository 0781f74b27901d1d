"""The live progress line: at 80 columns it keeps its round counter and bar, and shows the
headline metrics (ε too) with the traffic last."""

import io
import re

import pytest
from rich.console import Console

from fedstream.errors import ClientFailure
from fedstream.simulation.progress import RoundProgress
from fedstream.types import RoundReport

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def last_line(width: int, metrics: dict[str, float], failures: int = 0) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=True, color_system="standard")
    report = RoundReport(
        12, ("a",) * 20, ("a",) * 18,
        (ClientFailure("x", "train", "boom"),) * failures,
        2_400_000, 1_200_000, {}, metrics,
    )  # fmt: skip
    with RoundProgress(100, True, console, done=11) as bar:
        bar.advance(report)
    lines = [ANSI.sub("", line) for line in re.split(r"[\r\n]", out.getvalue())]
    return [line for line in lines if line.strip()][-1]


DP = {"central_accuracy": 0.91234, "central_loss": 0.34567, "dp_epsilon": 3.2109}


@pytest.mark.parametrize(
    ("metrics", "failures", "shown"),
    [
        (DP, 2, "acc 0.912 loss 0.346 ε 3.21 2 failed ↑1.2 ↓2.4 MB"),
        ({"central_loss": 27.25, "fed_loss": 30.0}, 0, " loss 27.250 ↑1.2 ↓2.4 MB"),  # regression
    ],
)
def test_at_80_columns_the_counter_bar_and_metrics_all_fit(metrics, failures, shown):
    line = last_line(80, metrics, failures)
    assert len(line) <= 80
    assert line.startswith("round  12/100 ")
    assert "━" in line  # the bar
    assert re.search(r"\d:\d\d:\d\d", line)  # elapsed time
    assert line.rstrip().endswith(shown)


def test_a_narrower_terminal_cuts_the_traffic_first_and_keeps_the_counter():
    line = last_line(64, DP, 2)
    assert len(line) <= 64 and line.startswith("round  12/100 ")
    assert "acc 0.912 loss 0.346" in line and "MB" not in line
