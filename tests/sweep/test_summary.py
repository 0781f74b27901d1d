"""A sweep's summary: medians and spreads over seeds, pinned on hand-made results."""

import json

import pytest

from fedstream.sweep import summarise, sweep_from_mapping
from fedstream.sweep.summary import plot_overlay


def results(folder, accuracies, epsilon=None):
    folder.mkdir(parents=True)
    rounds = [
        {
            "round": i + 1,
            "metrics": {"central_accuracy": a}
            | ({"dp_epsilon": epsilon * (i + 1)} if epsilon else {}),
        }
        for i, a in enumerate(accuracies)
    ]
    (folder / "results.json").write_text(json.dumps({"error": None, "rounds": rounds}))


def test_each_arm_gets_the_median_min_and_max_of_its_seeds_and_its_median_curve(tmp_path):
    sweep = sweep_from_mapping(
        {"seeds": [0, 1, 2], "grid": {"client.lr": [0.1, 0.3]},
         "data": {"num_clients": 10}, "run": {"clients_per_round": 5}}
    )  # fmt: skip
    results(tmp_path / "00-lr0.1-seed0", [0.2, 0.5])
    results(tmp_path / "00-lr0.1-seed1", [0.4, 0.7])
    results(tmp_path / "00-lr0.1-seed2", [0.3, 0.6])
    results(tmp_path / "01-lr0.3-seed0", [0.5, 0.9], epsilon=1.0)
    results(tmp_path / "01-lr0.3-seed1", [0.6, 0.8], epsilon=1.0)
    results(tmp_path / "01-lr0.3-seed2", [0.7, 0.85], epsilon=1.0)
    slow, fast = summarise(sweep, tmp_path)
    assert slow.arm == "client.lr=0.1" and slow.metric == "central_accuracy"
    assert slow.finals == (0.5, 0.7, 0.6) and slow.seeds == (0, 1, 2)
    assert (slow.median, slow.low, slow.high) == (0.6, 0.5, 0.7)
    assert slow.rounds == (1, 2) and slow.curve_median == (0.3, 0.6)
    assert slow.curve_low == (0.2, 0.5) and slow.curve_high == (0.4, 0.7)
    assert slow.epsilon is None
    assert (fast.median, fast.low, fast.high) == (0.85, 0.8, 0.9) and fast.epsilon == 2.0
    plot_overlay([slow, fast], tmp_path / "sweep.png", "lr")
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_that_never_wrote_results_is_named(tmp_path):
    sweep = sweep_from_mapping(
        {"seeds": [0], "data": {"num_clients": 10}, "run": {"clients_per_round": 5}}
    )
    with pytest.raises(FileNotFoundError, match="00-base-seed0"):
        summarise(sweep, tmp_path)
