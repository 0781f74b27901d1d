"""An app one of whose clients is hostile: its training fails with an error message that
is HTML meant to run script in whoever reads the dashboard."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

import fedstream
from fedstream.data.base import ClientData
from fedstream.types import FitConfig
from tests.dashboard.broken_site import SITES, load_site, model

PAYLOAD = '<img src=x onerror="window.__pwned = 1">'


def train(
    module: nn.Module, data: ClientData, config: FitConfig, rng: np.random.Generator
) -> Mapping[str, float]:
    """Plain SGD, except on the hostile site, whose error message is the payload."""
    if len(data.x_train) == len(load_site("site-2")[0][0]) and np.isnan(data.x_train).all():
        raise RuntimeError(PAYLOAD)
    optimiser = torch.optim.SGD(module.parameters(), lr=config.lr)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    loss = nn.functional.cross_entropy(module(x), y)
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return {"loss": loss.item()}


app = fedstream.App(model=model, data=load_site, client_ids=SITES, train=train, name=PAYLOAD)
