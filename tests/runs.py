"""Whole-run comparisons that many features' tests make: a resumed run against an
uninterrupted one, a secure sum against the plain one, vectorised against sequential."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import fedstream
from fedstream.simulation.engine import SimulationResult
from tests.settings import nested


def resumed_and_straight(
    tmp_path: Path, run: dict[str, Any]
) -> tuple[SimulationResult, SimulationResult]:
    """``run`` to its last round in one go, and stopped half way then resumed."""
    rounds = run["rounds"]
    straight = fedstream.simulate(**nested(**run))
    fedstream.simulate(output_dir=tmp_path / "run", **nested(**run | {"rounds": rounds // 2}))
    resumed = fedstream.simulate(output_dir=tmp_path / "run", resume=True, **nested(rounds=rounds))
    return resumed, straight


def assert_secure_sum_matches_plain(run: dict[str, Any]) -> None:
    """SecAgg+ over 6 of 20 clients ends where the plain sum does (fixed point: 1e-6)."""
    small = {"num_clients": 20, "clients_per_round": 6}
    plain = fedstream.simulate(**nested(**run, **small))
    secure = fedstream.simulate(**nested(secure_aggregation="secagg+", **run, **small))
    np.testing.assert_allclose(secure.state.params.flat(), plain.state.params.flat(), atol=1e-6)


def vectorised_and_sequential(run: dict[str, Any]) -> tuple[SimulationResult, SimulationResult]:
    """``run`` with the vectorised trainer and with the sequential one, after checking
    that they end at the same params (float tolerance: the batched sums differ in order)."""
    vectorized = fedstream.simulate(**nested(trainer="vectorized", **run))
    sequential = fedstream.simulate(**nested(trainer="sequential", **run))
    assert vectorized.trainer.startswith("vectorized"), vectorized.trainer
    np.testing.assert_allclose(
        vectorized.state.params.flat(), sequential.state.params.flat(), rtol=1e-4, atol=1e-5
    )
    return vectorized, sequential
