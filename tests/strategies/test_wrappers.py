"""A wrapper (a robust rule; differential privacy in tests/privacy) hands its inner
strategy the server's state, so a strategy of the user's own that reads it (here a
learning rate that halves every round) behaves the same wrapped as alone."""

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import pytest

from fedstream import FitConfig, Params
from fedstream.strategies import FedAvg, Robust
from fedstream.strategies.base import Strategy
from fedstream.types import ServerState


@dataclass(frozen=True)
class Halving(FedAvg):
    """FedAvg whose clients' learning rate halves every round."""

    name: ClassVar[str] = "halving"

    def configure_fit(self, state: ServerState, fit: FitConfig) -> FitConfig:
        fit = super().configure_fit(state, fit)
        return replace(fit, lr=fit.lr * 0.5**state.round)

    def round_metrics(self, state: ServerState) -> dict[str, float]:
        return {"lr_scale": 0.5**state.round}


def assert_sees_the_servers_state(wrapped: Strategy) -> None:
    """``wrapped`` (around ``Halving``) at round 2: the inner strategy's lr and metric."""
    state = ServerState.initial(Params({"w": np.zeros(2)}), 0).evolve(round=2)
    assert wrapped.configure_fit(state, FitConfig(lr=0.4)).lr == pytest.approx(0.1)
    assert wrapped.round_metrics(state)["lr_scale"] == 0.25


def test_a_strategy_under_a_robust_rule_sees_the_servers_state():
    assert_sees_the_servers_state(Robust(Halving(), "median"))
