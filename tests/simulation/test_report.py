"""curves.png: which panels a run's metrics call for, and whole-number round ticks."""

import pytest

from fedstream.simulation.report import curve_panels, draw_panels
from fedstream.types import RoundReport


def report(round_: int, **metrics: float) -> RoundReport:
    return RoundReport(round_, ("a", "b"), ("a", "b"), (), 500_000, 250_000 * round_, {}, metrics)


def test_a_classification_run_with_dp_gets_accuracy_loss_traffic_and_epsilon():
    reports = [
        report(1, central_accuracy=0.5, central_loss=1.2, train_loss=1.5, dp_epsilon=0.8),
        report(2, central_accuracy=0.7, central_loss=0.9, train_loss=1.1, dp_epsilon=1.1),
    ]
    panels = curve_panels(reports)
    assert [(p.x_label, p.y_label) for p in panels] == [
        ("round", "accuracy"),
        ("round", "loss"),
        ("cumulative uplink MB (all clients)", "accuracy"),
        ("round", "ε (privacy spent)"),
    ]
    assert panels[0].series == {"central_accuracy": ((1.0, 2.0), (0.5, 0.7))}
    assert set(panels[1].series) == {"central_loss", "train_loss"}
    # 0.25 MB up in round 1, 0.5 MB in round 2
    assert panels[2].series == {"central_accuracy": ((0.25, 0.75), (0.5, 0.7))}
    assert panels[3].series == {"dp_epsilon": ((1.0, 2.0), (0.8, 1.1))}


def test_a_regression_run_draws_no_empty_accuracy_panel():
    reports = [report(1, central_loss=30.0, fed_loss=32.0), report(2, central_loss=20.0)]
    panels = curve_panels(reports)
    assert [p.y_label for p in panels] == ["loss", "loss"]  # by round, then by traffic
    assert panels[1].series == {
        "central_loss": ((0.25, 0.75), (30.0, 20.0)),
        "fed_loss": ((0.25,), (32.0,)),
    }


@pytest.mark.parametrize("rounds", [2, 3, 7])
def test_short_runs_get_whole_round_ticks(rounds):
    import matplotlib.pyplot as plt

    reports = [
        report(r, central_accuracy=0.1 * r, central_loss=1.0 / r) for r in range(1, rounds + 1)
    ]
    figure = draw_panels(curve_panels(reports), "title")
    try:
        round_axes = [a for a in figure.axes if a.get_xlabel() == "round"]
        assert len(round_axes) == 2
        for axis in round_axes:
            ticks = [t for t in axis.get_xticks() if 1 <= t <= rounds]
            assert ticks and all(float(t).is_integer() for t in ticks)
    finally:
        plt.close(figure)


def test_a_run_on_a_clock_gets_accuracy_against_simulated_time_and_async_counts_steps():
    reports = [
        report(1, central_accuracy=0.5, sim_time_s=4.0, staleness_mean=0.5),
        report(2, central_accuracy=0.7, sim_time_s=9.5, staleness_mean=1.0),
    ]
    panels = curve_panels(reports)
    assert [(p.x_label, p.y_label) for p in panels] == [
        ("server step", "accuracy"),
        ("cumulative uplink MB (all clients)", "accuracy"),
        ("simulated time (s)", "accuracy"),
    ]
    assert panels[2].series == {"central_accuracy": ((4.0, 9.5), (0.5, 0.7))}
    # a synchronous run on a clock counts rounds
    synchronous = [report(1, central_accuracy=0.5, sim_time_s=4.0)]
    assert curve_panels(synchronous)[0].x_label == "round"
