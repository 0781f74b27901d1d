"""The training task as a round plans it."""

import dataclasses

import pytest

from fedstream.client.base import FitTask
from fedstream.types import FitConfig


def test_a_planned_task_is_the_constructors_task():
    config = FitConfig(local_epochs=3, lr=0.2, seed=11)
    planned = FitTask.planned("c7", 4, config)
    built = FitTask("c7", 4, config)
    assert planned == built and hash(planned) == hash(built)
    assert dataclasses.asdict(planned) == dataclasses.asdict(built)
    assert planned.config is config and planned.frozen == () and planned.correction is None
    assert dataclasses.replace(planned, round=5) == FitTask("c7", 5, config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        planned.round = 6  # type: ignore[misc]
