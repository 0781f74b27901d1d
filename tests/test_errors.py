"""Every error fedstream raises survives pickling (a worker process or a Ray actor sends
it to the parent), whatever its constructor takes."""

import multiprocessing
import pickle
from pathlib import Path

import pytest

from fedstream.errors import (
    ClientFailure,
    ConfigError,
    NonFiniteModelError,
    PrivacyBudgetExceeded,
    RoundFailedError,
)
from fedstream.serving.registry import ModelLoadError
from fedstream.store.runs import StoreError

ERRORS = [
    ConfigError("run.rounds", 0, "a whole number >= 1"),
    RoundFailedError(3, "no update", [ClientFailure("c", "train", "boom")]),
    NonFiniteModelError(2, reason="the step is NaN"),
    PrivacyBudgetExceeded(5, 1.0, 2.5, 2.0),
    ModelLoadError(7, "does not fit"),
    StoreError(Path("/tmp/x.sqlite"), ValueError("bad")),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_an_error_pickles_as_itself(error):
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert again.__dict__.keys() == error.__dict__.keys()


def _raise_round_failed(_: int) -> None:
    raise RoundFailedError(4, "every update was refused")


@pytest.mark.slow  # a whole run or a process, seconds
def test_an_error_raised_in_a_worker_process_reaches_the_parent():
    # before, unpickling it in the parent raised TypeError in the pool's result thread,
    # and the parent waited for ever
    refused = r"^round 4 failed: every update was refused$"
    with (
        multiprocessing.get_context("spawn").Pool(1) as pool,
        pytest.raises(RoundFailedError, match=refused),
    ):
        pool.apply(_raise_round_failed, (0,))
