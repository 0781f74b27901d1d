"""``simulate``: a whole federated run in this process, from a config to results on disk."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedstream.client.base import Trainer
from fedstream.client.torch_trainer import TorchTrainer, params_from_module
from fedstream.client.vectorized import VectorizedTrainer
from fedstream.data.base import ClientData, FederatedDataset
from fedstream.data.datasets import federate
from fedstream.errors import RoundFailedError
from fedstream.models import build_model
from fedstream.params import Params
from fedstream.rounds import CentralEvaluate, run_rounds
from fedstream.simulation.config import SimulationConfig
from fedstream.simulation.progress import RoundProgress
from fedstream.simulation.report import write_outputs
from fedstream.transport.inprocess import InProcessTransport
from fedstream.types import RoundReport, ServerState


@dataclass(frozen=True)
class SimulationResult:
    """The final state, every round's report, and where the outputs were written."""

    config: SimulationConfig
    state: ServerState
    reports: tuple[RoundReport, ...]
    wall_s: float
    output_dir: Path | None

    @property
    def final_metrics(self) -> Mapping[str, float]:
        return self.reports[-1].metrics if self.reports else {}

    @property
    def client_updates(self) -> int:
        return sum(len(r.completed) for r in self.reports)


@dataclass(frozen=True)
class Setup:
    """Everything a simulated run is built from, made once before round 1."""

    dataset: FederatedDataset
    module: torch.nn.Module
    trainer: Trainer
    transport: InProcessTransport
    initial: ServerState
    central_evaluate: CentralEvaluate
    trainer_name: str
    trainer_reason: str


def _seeds(config: SimulationConfig) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """Independent streams for the data split and the server, both from ``config.seed``."""
    data_seed, server_seed = np.random.SeedSequence(config.seed).spawn(2)
    return data_seed, server_seed


def build_dataset(config: SimulationConfig) -> FederatedDataset:
    """The federated split ``config`` describes, exactly as a run with it would see it."""
    return federate(rng=np.random.default_rng(_seeds(config)[0]), **config.data_kwargs())


def build(config: SimulationConfig) -> Setup:
    """Data, model, trainer, transport and the initial state, all drawn from ``config.seed``."""
    server_seed = _seeds(config)[1]
    dataset = build_dataset(config)
    dtype = torch.float64 if dataset.x_heldout.dtype == np.float64 else torch.float32
    module = build_model(
        config.model, dataset.num_features, dataset.num_outputs, config.seed, config.hidden, dtype
    )
    trainer_name, why = choose_trainer(config.trainer, module, sample_dp=config.dp == "sample")
    trainer: Trainer = (
        VectorizedTrainer(module, dataset.task)
        if trainer_name == "vectorized"
        else TorchTrainer(module, dataset.task)
    )
    params = params_from_module(module)
    strategy = config.build_strategy()
    initial = ServerState.initial(params, server_seed).evolve(
        optimizer=strategy.init_optimizer(params)
    )
    empty = dataset.x_heldout[:0]
    heldout = ClientData(empty, dataset.y_heldout[:0], dataset.x_heldout, dataset.y_heldout)

    def central_evaluate(global_params: Params) -> Mapping[str, float]:
        return trainer.evaluate(global_params, "server", 0, heldout).metrics

    return Setup(
        dataset,
        module,
        trainer,
        InProcessTransport(dataset.clients, trainer),
        initial,
        central_evaluate,
        trainer_name,
        why,
    )


def choose_trainer(
    requested: str, module: torch.nn.Module, sample_dp: bool = False
) -> tuple[str, str]:
    """The trainer to use and why: ``auto`` picks the vectorised one when the model allows
    and the clients run plain SGD (DP-SGD's per-example gradients go one client at a time)."""
    if requested != "auto":
        return requested, "as configured"
    if sample_dp:
        return "sequential", "auto: DP-SGD computes per-example gradients one client at a time"
    reason = VectorizedTrainer.unsupported(module)
    if reason is None:
        return "vectorized", "auto: the model can be vmapped"
    return "sequential", f"auto: the vectorised trainer needs {reason}"


def describe(setup: Setup) -> dict[str, Any]:
    """The data summary plus the trainer chosen, for results.json."""
    return {
        **setup.dataset.describe(),
        "trainer": setup.trainer_name,
        "trainer_reason": setup.trainer_reason,
    }


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op threads, then restore the previous setting. One thread per
    process is much faster than two for models this small (DESIGN.md)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def simulate(
    config: SimulationConfig | None = None,
    *,
    output_dir: str | Path | None = None,
    progress: bool = False,
    **overrides: Any,
) -> SimulationResult:
    """Run a simulated federated training and return its result.

    ``config`` defaults to ``SimulationConfig()``; keyword ``overrides`` change single
    settings (``simulate(rounds=5, strategy="fedprox", mu=0.1)``). With ``output_dir``,
    ``results.json``, ``metrics.csv`` and ``curves.png`` are written there. ``progress``
    shows a live progress bar and a final table on the terminal.
    """
    config = (
        (config or SimulationConfig()).with_changes(**overrides)
        if overrides
        else (config or SimulationConfig())
    )
    started = time.perf_counter()
    out = Path(output_dir) if output_dir is not None else None
    reports: list[RoundReport] = []
    with torch_threads(config.threads):
        setup = build(config)
        state = setup.initial
        client_ids = sorted(setup.dataset.clients)
        try:
            with RoundProgress(config.rounds, enabled=progress) as bar:
                for new_state, report in run_rounds(
                    setup.initial,
                    config.build_strategy(),
                    setup.transport,
                    client_ids,
                    config.round_config(),
                    config.rounds,
                    setup.central_evaluate,
                ):
                    state = new_state
                    reports.append(report)
                    bar.advance(report)
        except RoundFailedError as failure:
            # keep what the completed rounds produced, then let the caller see the failure
            partial = SimulationResult(
                config, state, tuple(reports), time.perf_counter() - started, out
            )
            if out is not None:
                write_outputs(partial, describe(setup), out, error=str(failure))
            raise
    result = SimulationResult(config, state, tuple(reports), time.perf_counter() - started, out)
    if out is not None:
        write_outputs(result, describe(setup), out)
    if progress:
        RoundProgress.print_summary(result)
    return result
