"""Sweep files: arms, seeds, run names, and errors that name the key, the value and the arm."""

import pytest

from fedstream import ConfigError
from fedstream.sweep import sweep_from_mapping

BASE = {"data": {"num_clients": 10}, "run": {"rounds": 2, "clients_per_round": 5}}


def test_every_combination_of_the_grid_runs_once_per_seed():
    sweep = sweep_from_mapping(
        {"seeds": [3, 7], "grid": {"strategy.name": ["fedavg", "fedprox"], "client.lr": [0.1, 0.3]}}
        | BASE
    )
    assert [arm.name for arm in sweep.arms()] == [
        "strategy.name=fedavg client.lr=0.1", "strategy.name=fedavg client.lr=0.3",
        "strategy.name=fedprox client.lr=0.1", "strategy.name=fedprox client.lr=0.3",
    ]  # fmt: skip
    names = [name for name, _, _ in sweep.runs()]
    assert names[:3] == ["00-fedavg-lr0.1-seed3", "00-fedavg-lr0.1-seed7", "01-fedavg-lr0.3-seed3"]
    assert len(names) == 8
    _, arm, seed = sweep.runs()[-1]
    config = sweep.config(arm, seed)
    assert (config.strategy.name, config.client.lr, config.execution.seed) == ("fedprox", 0.3, 7)
    assert config.run.rounds == 2 and config.data.num_clients == 10  # the shared settings


def test_an_empty_grid_is_one_arm_over_the_seeds():
    sweep = sweep_from_mapping({"seeds": [0, 1, 2]} | BASE)
    assert [name for name, _, _ in sweep.runs()] == [
        "00-base-seed0",
        "00-base-seed1",
        "00-base-seed2",
    ]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"seeds": []}, r"^seeds=\[\] is invalid: expected a list of distinct integers >= 0$"),
        ({"seeds": [1, 1]}, r"^seeds=\[1, 1\] is invalid"),
        ({"seeds": [-1]}, r"^seeds=\[-1\] is invalid"),
        (
            {"grid": {"lr": [0.1]}},
            r"^grid\.lr=\[0\.1\] is invalid: expected a key \"section\.name\"",
        ),
        (
            {"grid": {"client.lr": []}},
            r"^grid\.client\.lr=\[\] is invalid: expected a non-empty list",
        ),
        (
            {"grid": {"client.lr": 0.1}},
            r"^grid\.client\.lr=0\.1 is invalid: expected a non-empty list",
        ),
        (
            {"grid": {"execution.seed": [1, 2]}},
            r"expected seeds = \[\.\.\.\] at the top of the file$",
        ),
        (
            {"grid": {"client.lr": [0.1, -1.0]}},
            r"^client\.lr=-1\.0 is invalid: expected a finite number > 0 "
            r"\(in arm client\.lr=-1\.0\)$",
        ),
        ({"grid": {"client.learning_rate": [0.1]}}, r"\(in arm client\.learning_rate=0\.1\)$"),
    ],
)
def test_a_bad_sweep_is_refused_before_any_run_naming_what_is_wrong(values, message):
    with pytest.raises(ConfigError, match=message):
        sweep_from_mapping(values | BASE)
