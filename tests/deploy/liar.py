"""A client process that lies, for the tests that play a hostile participant over gRPC.

    python -m tests.deploy.liar RUN.toml PORT CLIENT_ID TOKENS.json LIE

It trains like an honest client of the run in ``RUN.toml``, then changes its update by
``LIE``:

- ``weight``: declares 10^12 examples and sends minus the global model (its aim: a model
  of zeros, the issue 18 attack whose accuracy fell from 0.886 to 0.092);
- ``scale``: sends its honest update times 10^6 (a finite but huge update);
- ``overflow``: declares 10^300 examples (its aim: a NaN server update).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fedstream import ClientUpdate, EvaluateResult, Params
from fedstream.cli.options import load_config
from fedstream.client.base import FitTask, Trainer
from fedstream.data.base import ClientData
from fedstream.deploy import client_setup
from fedstream.transport.grpc.client import run_client


@dataclass
class Liar:
    """An honest trainer whose updates are changed by ``lie`` on the way out."""

    honest: Trainer
    lie: str

    def fit(self, params: Params, task: FitTask, data: ClientData) -> ClientUpdate:
        update = self.honest.fit(params, task, data)
        if self.lie == "weight":
            return replace(update, weight=1e12, payload=params.map(np.negative))
        if self.lie == "scale":
            return replace(update, payload=update.payload.map(lambda a: a * 1e6))
        if self.lie == "overflow":
            return replace(update, weight=1e300)
        raise ValueError(f"lie={self.lie!r} is unknown")

    def evaluate(
        self, params: Params, client_id: str, round_number: int, data: ClientData
    ) -> EvaluateResult:
        return self.honest.evaluate(params, client_id, round_number, data)


def main(toml: str, port: str, client_id: str, tokens: str, lie: str) -> None:
    config = load_config(Path(toml), None, {})
    data, trainer = client_setup(config, client_id)
    token = json.loads(Path(tokens).read_text())[client_id]
    run_client(f"127.0.0.1:{port}", client_id, token, data, Liar(trainer, lie), give_up_after_s=60)


if __name__ == "__main__":
    main(*sys.argv[1:6])
