"""``simulate``: a whole federated run in this process, from a config to results on disk."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fedstream.client.base import Trainer
from fedstream.client.torch_trainer import TorchTrainer, params_from_module
from fedstream.client.vectorized import VectorizedTrainer
from fedstream.data.base import ClientData, FederatedDataset, subset
from fedstream.data.datasets import federate
from fedstream.errors import ConfigError, RoundFailedError
from fedstream.models import build_model
from fedstream.params import Params
from fedstream.rounds import CentralEvaluate, run_rounds
from fedstream.simulation.config import SimulationConfig, from_mapping
from fedstream.simulation.progress import RoundProgress
from fedstream.simulation.report import atomic_write, write_outputs
from fedstream.store.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_client_states,
    save_checkpoint,
)
from fedstream.store.runs import RunStore
from fedstream.transport.base import Transport
from fedstream.transport.inprocess import InProcessTransport
from fedstream.transport.processes import ProcessTransport, available_cores
from fedstream.transport.ray import RayTransport
from fedstream.transport.sharded import worker_of
from fedstream.types import RoundReport, ServerState

if TYPE_CHECKING:  # serving imports FastAPI, which a simulation without it need not load
    from fedstream.serving.app import PublishTarget

log = logging.getLogger("fedstream.simulation")


@dataclass(frozen=True)
class SimulationResult:
    """The final state, every round's report, and where the outputs were written."""

    config: SimulationConfig
    state: ServerState
    reports: tuple[RoundReport, ...]
    wall_s: float
    output_dir: Path | None
    trainer: str = ""  # which trainer ran and why it was chosen
    executor: str = ""  # where clients trained

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
    initial = ServerState.initial(params, server_seed)
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


def local_transport(config: Mapping[str, Any], worker: int, workers: int) -> InProcessTransport:
    """Worker ``worker`` of ``workers``: the data of the clients it serves (those
    ``worker_of`` gives it) and the trainer, rebuilt from the run's config and seed, so
    identical to the server's, without pickling any data. The other clients' rows are
    dropped once built, so each worker keeps only its own share."""
    setup = build(from_mapping(config, "worker"))
    clients = setup.dataset.clients
    mine = [c for c in clients if worker_of(c, workers) == worker]
    if not mine:  # more workers than clients: this one will never be asked
        return setup.transport
    return InProcessTransport(subset(clients, mine), setup.trainer)


def worker_count(config: SimulationConfig) -> int:
    """How many processes or actors train clients: 1 in process, else ``workers`` or
    the cores available."""
    if config.executor == "inprocess":
        return 1
    return config.workers or available_cores()


def executor_transport(config: SimulationConfig) -> ProcessTransport | RayTransport | None:
    """The transport ``config.executor`` asks for, or ``None`` for in-process."""
    if config.executor == "inprocess":
        return None
    workers = worker_count(config)
    recipe = functools.partial(local_transport, config.to_dict())
    if config.executor == "ray":
        return RayTransport(recipe, workers, config.threads, config.ray_address)
    return ProcessTransport(recipe, workers, config.threads)


def architecture(config: SimulationConfig, dataset: FederatedDataset) -> dict[str, Any]:
    """What a serving process needs to rebuild the module that a run's params fit."""
    return {
        "model": config.model,
        "in_features": dataset.num_features,
        "out_features": dataset.num_outputs,
        "hidden": list(config.hidden) if config.hidden is not None else None,
        "dtype": str(dataset.x_heldout.dtype),
        "task": dataset.task,
        "seed": config.seed,
    }


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


def describe(setup: Setup, config: SimulationConfig) -> dict[str, Any]:
    """The data summary plus the trainer and executor chosen, for results.json."""
    return {
        **setup.dataset.describe(),
        "trainer": setup.trainer_name,
        "trainer_reason": setup.trainer_reason,
        "executor": config.executor,
        "workers": worker_count(config),
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


RESUMABLE_CHANGES = frozenset({"rounds", "threads"})


def _resume_config(out: Path, config: SimulationConfig | None, overrides: Any) -> SimulationConfig:
    """The config a run in ``out`` started with, changed only where a resume may change it
    (more rounds, other threads); any other difference would break exactness."""
    try:
        started = from_mapping(json.loads((out / "config.json").read_text()), "resume")
    except FileNotFoundError:
        raise ConfigError(
            "resume", str(out), "a run folder with config.json (written when a run starts)"
        ) from None
    wanted = (config or started).with_changes(**overrides) if overrides else (config or started)
    for key, value in wanted.to_dict().items():
        if key not in RESUMABLE_CHANGES and started.to_dict()[key] != value:
            raise ConfigError(
                key, value, f"{started.to_dict()[key]!r}, the value the resumed run started with"
            )
    return wanted


def simulate(
    config: SimulationConfig | None = None,
    *,
    output_dir: str | Path | None = None,
    progress: bool = False,
    resume: bool = False,
    store: str | Path | None = None,
    keep_checkpoints: int = 3,
    transport_factory: Callable[[Setup], Transport] | None = None,
    publish_to: PublishTarget | None = None,
    **overrides: Any,
) -> SimulationResult:
    """Run a simulated federated training and return its result.

    ``config`` defaults to ``SimulationConfig()``; keyword ``overrides`` change single
    settings (``simulate(rounds=5, strategy="fedprox", mu=0.1)``). ``progress`` shows a live
    progress bar and a final table on the terminal.

    With ``output_dir`` the run is persistent: ``config.json`` at the start, a checkpoint of
    the server state after every round (the newest ``keep_checkpoints``) under
    ``checkpoints/``, every round (and its model, in the registry) in the SQLite run store
    ``store`` (default
    ``<output_dir>/../store.sqlite``, run id = the folder's name), and ``results.json``,
    ``metrics.csv`` and ``curves.png`` at the end. ``resume=True`` continues the run in
    ``output_dir`` from its newest checkpoint and ends bit for bit where an uninterrupted
    run would have (only ``rounds`` and ``threads`` may differ from the original settings).

    ``transport_factory`` replaces the in-process clients: a deployment passes one that
    returns its gRPC transport, and the same loop, checkpoints and store drive real clients.
    ``publish_to`` (a ``fedstream.serving.PublishTarget``) also pushes every round's model
    to a serving process (``fedstream serve --publish-token-file``), which may run on
    another machine, over TLS for an https URL; a push that fails is logged and training
    goes on.
    """
    out = Path(output_dir) if output_dir is not None else None
    if resume:
        if out is None:
            raise ConfigError("resume", True, "an output_dir holding the run to continue")
        config = _resume_config(out, config, overrides)
    else:
        config = (
            (config or SimulationConfig()).with_changes(**overrides)
            if overrides
            else (config or SimulationConfig())
        )
    started = time.perf_counter()
    runs = RunStore(store or out.parent / "store.sqlite") if out is not None else None
    run_id = out.name if out is not None else ""
    reports: list[RoundReport] = []
    with torch_threads(config.threads):
        setup = build(config)
        state = setup.initial
        if out is not None and runs is not None:
            if resume:
                state, reports = _restore(out, setup, runs, run_id)
            else:
                out.mkdir(parents=True, exist_ok=True)
                atomic_write(out / "config.json", json.dumps(config.to_dict(), indent=1).encode())
            runs.start_run(run_id, config.to_dict(), str(out))
        client_ids = sorted(setup.dataset.clients)
        workers = None if transport_factory else executor_transport(config)
        transport = transport_factory(setup) if transport_factory else workers or setup.transport
        # the simulated devices, whose states a checkpoint keeps (a deployment's clients
        # keep theirs on their own disks)
        devices = None if transport_factory else workers or setup.transport
        if resume and devices is not None and out is not None:
            folder = latest_checkpoint(out / "checkpoints")
            if folder is not None:
                devices.restore_client_states(load_client_states(folder))
        try:
            with RoundProgress(config.rounds, enabled=progress, done=state.round) as bar:
                for new_state, report in run_rounds(
                    state,
                    config.build_strategy(),
                    transport,
                    client_ids,
                    config.round_config(),
                    config.rounds,
                    setup.central_evaluate,
                    config.task_policy(),
                ):
                    if out is not None and runs is not None:
                        save_checkpoint(
                            out / "checkpoints",
                            new_state,
                            report,
                            keep_checkpoints,
                            devices.client_states() if devices is not None else None,
                        )
                        runs.record_round(run_id, report)
                        runs.publish_model(
                            run_id,
                            report.round,
                            architecture(config, setup.dataset),
                            report.metrics,
                            new_state.params.to_bytes(),
                        )
                    if publish_to is not None:
                        _publish(publish_to, report, architecture(config, setup.dataset), new_state)
                    state = new_state
                    reports.append(report)
                    bar.advance(report)
        except RoundFailedError as failure:
            # keep what the completed rounds produced, then let the caller see the failure
            partial = SimulationResult(
                config,
                state,
                tuple(reports),
                time.perf_counter() - started,
                out,
                *how(setup, config),
            )
            if out is not None and runs is not None:
                write_outputs(partial, describe(setup, config), out, error=str(failure))
                runs.finish_run(run_id, error=str(failure))
            raise
        finally:
            if workers is not None:
                workers.close()
    result = SimulationResult(
        config, state, tuple(reports), time.perf_counter() - started, out, *how(setup, config)
    )
    if out is not None and runs is not None:
        write_outputs(result, describe(setup, config), out)
        runs.finish_run(run_id)
    if progress:
        RoundProgress.print_summary(result)
    return result


def how(setup: Setup, config: SimulationConfig) -> tuple[str, str]:
    """The trainer (and why) and the executor, as the summary shows them."""
    executor = config.executor
    if executor != "inprocess":
        executor += f" × {worker_count(config)}"
    return f"{setup.trainer_name} ({setup.trainer_reason})", executor


def _publish(
    target: PublishTarget, report: RoundReport, arch: dict[str, Any], state: ServerState
) -> None:
    from fedstream.serving.app import publish

    try:
        publish(target, report.round, arch, report.metrics, state.params.to_bytes())
    except OSError as exc:  # the serving side being down must not stop training
        log.warning("could not publish round %d to %s: %s", report.round, target.url, exc)


def _restore(
    out: Path, setup: Setup, runs: RunStore, run_id: str
) -> tuple[ServerState, list[RoundReport]]:
    """The newest checkpoint's state and the reports of the rounds up to it. A round whose
    checkpoint was written but whose store record was not (a crash between the two) is
    recorded from the checkpoint; rounds after the checkpoint are dropped and rerun."""
    folder = latest_checkpoint(out / "checkpoints")
    if folder is None:
        return setup.initial, []
    state, report = load_checkpoint(folder)
    try:
        setup.initial.params.check_compatible(state.params, f"checkpoint {folder}")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    known = {r.round: r for r in runs.reports(run_id)} if _has_run(runs, run_id) else {}
    if report is not None and report.round not in known:
        runs.start_run(run_id, {}, str(out))
        runs.record_round(run_id, report)
        known[report.round] = report
    runs.forget_after(run_id, state.round)
    return state, [known[r] for r in sorted(known) if r <= state.round]


def _has_run(runs: RunStore, run_id: str) -> bool:
    return any(r["id"] == run_id for r in runs.runs())
