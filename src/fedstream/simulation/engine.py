"""``simulate``: a whole federated run in this process, from a config to results on disk."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fedstream.app import App, check_model_fits, is_torch, load_app, model_params
from fedstream.client.base import FitTask, Trainer
from fedstream.client.local import personal_entries
from fedstream.client.recurrent import has_lstm
from fedstream.client.state import ClientState
from fedstream.client.torch_trainer import batch_norm_entries, load_params, params_from_module
from fedstream.client.vectorized import VectorizedTrainer
from fedstream.data.base import ClientData, FederatedDataset, subset
from fedstream.data.datasets import federate
from fedstream.data.stream import Stream, freshness
from fedstream.errors import ConfigError, RoundFailedError
from fedstream.models import build_model
from fedstream.params import Params
from fedstream.privacy.mechanisms import device_secret
from fedstream.rounds import CentralEvaluate, RoundConfig
from fedstream.simulation.attacks import (
    ATTACK_STREAM,
    DATA_ATTACKS,
    UPDATE_ATTACKS,
    Attacks,
    PoisonedClients,
    add_trigger,
    alie_z,
    choose_attackers,
    hash_id,
    poison,
)
from fedstream.simulation.config import SimulationConfig, from_mapping, merge
from fedstream.simulation.progress import RoundProgress
from fedstream.simulation.report import atomic_write, write_outputs
from fedstream.simulation.timeline import check_deployed_clock, device_clock, server_steps
from fedstream.store.checkpoint import (
    CheckpointError,
    newest_intact_checkpoint,
    save_checkpoint,
)
from fedstream.store.folder import HISTORY_FILE, RoundHistory, claim_run_folder
from fedstream.store.runs import RunStore
from fedstream.tracking.base import RunCallback, RunStart, notify
from fedstream.transport.base import Transport
from fedstream.transport.inprocess import InProcessTransport
from fedstream.transport.processes import ProcessTransport, available_cores
from fedstream.transport.ray import RayTransport
from fedstream.transport.sharded import worker_of
from fedstream.types import RoundReport, ServerState

if TYPE_CHECKING:  # serving imports FastAPI, which a simulation without it need not load
    from fedstream.serving.publish import PublishTarget

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
    data: str = ""  # the data's name: a built-in data set's, or the app's

    @property
    def description(self) -> str:
        """What ran, as a person says it: ``fedavg + DP (client) on digits``."""
        return f"{self.config.label} on {self.data or self.config.data.dataset}"

    @property
    def final_metrics(self) -> Mapping[str, float]:
        return self.reports[-1].metrics if self.reports else {}

    @property
    def client_updates(self) -> int:
        return sum(len(r.completed) for r in self.reports)


@dataclass(frozen=True)
class Setup:
    """Everything a simulated run is built from, made once before round 1. ``transport``
    (the simulated clients) is ``None`` for a server whose clients are elsewhere;
    ``central_evaluate`` is ``None`` when there is no held-out data; ``stream`` is the
    clients' data arriving over time (``[stream]``), if any."""

    app: App
    dataset: FederatedDataset
    module: Any
    trainer: Trainer
    transport: InProcessTransport | None
    initial: ServerState
    central_evaluate: CentralEvaluate | None
    trainer_name: str
    trainer_reason: str
    stream: Stream | None = None


def _seeds(config: SimulationConfig) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """Independent streams for the data split and the server, both from ``config.seed``."""
    data_seed, server_seed = np.random.SeedSequence(config.execution.seed).spawn(2)
    return data_seed, server_seed


def build_dataset(config: SimulationConfig) -> FederatedDataset:
    """The federated split ``config`` describes, exactly as a run with it would see it."""
    return federate(rng=np.random.default_rng(_seeds(config)[0]), **config.data.federate_kwargs())


def builtin_app(config: SimulationConfig) -> tuple[App, FederatedDataset]:
    """The built-in data set and model that ``config`` names, as an ``App`` (and the
    federated split it draws, whose pooled clients the run uses directly)."""
    dataset = build_dataset(config)
    dtype = torch.float64 if dataset.x_heldout.dtype == np.float64 else torch.float32
    model = functools.partial(
        build_model,
        config.model.name,
        dataset.num_features,
        dataset.num_outputs,
        config.execution.seed,
        config.model.hidden,
        dtype,
    )
    heldout = (dataset.x_heldout, dataset.y_heldout)
    app = App(model, dataset.clients, task=dataset.task, heldout=heldout, name=config.data.dataset)
    return app, dataset


def app_dataset(app: App) -> FederatedDataset:
    """A user's app as a federated data set: its clients (read on first use) and its
    held-out split, if any."""
    heldout = app.heldout_split()
    x, y = heldout if heldout is not None else (np.zeros((0, 0), np.float32), np.zeros(0))
    return FederatedDataset(app.name, app.checked_task, app.clients(), x, y, 0, 0)


def resolve_app(config: SimulationConfig, app: App | None) -> App | None:
    """The app a run uses: the one passed in, else the one ``config.app`` names, else
    ``None`` for the built-in data and model."""
    if app is not None:
        return app
    return load_app(config.model.app) if config.model.app is not None else None


def app_population(app: App | str | None) -> dict[str, dict[str, int]]:
    """The setting that makes ``data.num_clients`` the app's number of clients (none
    without an app). With an app its clients, not the setting, are the population, and
    what is derived from the count must be the one the rounds draw from: DP's client
    sampling rate q = clients per round / population (the accountant charges it) and the
    checks of Poisson sampling and of clients per round."""
    if app is None:
        return {}
    loaded = load_app(app) if isinstance(app, str) else app
    return {"data": {"num_clients": len(loaded.ids())}}


def build(config: SimulationConfig, app: App | None = None, *, server_only: bool = False) -> Setup:
    """Data, model, trainer, transport and the initial state, all drawn from ``config.seed``,
    for the built-in data and model or for ``app`` (or the one ``config.app`` names).

    Before round 1 a user's app is checked: every client's data is read (an empty client
    is named), the model's output must fit the labels, and its own train and evaluate
    functions are run once on the first client. With ``server_only`` (a deployment's
    server, or a worker) no client data is read and there is no in-process transport.
    """
    server_seed = _seeds(config)[1]
    user_app = resolve_app(config, app)
    if user_app is None:
        app, dataset = builtin_app(config)
    else:
        app, dataset = user_app, app_dataset(user_app)
    if config.attack.kind in DATA_ATTACKS:
        dataset = with_poisoned_clients(dataset, config)
    module = app.build_model(config.execution.seed)
    trainer_name, why = choose_trainer(
        config.execution.trainer, module, config.privacy.level == "sample", app
    )
    trainer: Trainer = (
        VectorizedTrainer(module, app.task) if trainer_name == "vectorized" else app.trainer(module)
    )
    initial = ServerState.initial(model_params(module), server_seed)
    central_evaluate: CentralEvaluate | None = None
    if len(dataset.x_heldout):
        empty = dataset.x_heldout[:0]
        heldout = ClientData(empty, dataset.y_heldout[:0], dataset.x_heldout, dataset.y_heldout)

        backdoored = backdoor_probe(dataset, config)

        def central_evaluate(global_params: Params) -> Mapping[str, float]:
            metrics = dict(trainer.evaluate(global_params, "server", 0, heldout).metrics)
            if backdoored is not None:
                probe = trainer.evaluate(global_params, "server", 0, backdoored).metrics
                metrics["backdoor_success"] = probe["accuracy"]
            return metrics

    transport = None
    stream = client_stream(config, dataset)  # a deployed server reads only its arrivals
    if not server_only:
        transport = InProcessTransport(
            dataset.clients,
            trainer,
            device_secret=device_secret(config.execution.seed),
            stream=stream,
        )
        if user_app is not None:
            preflight(app, module, trainer, dataset.clients, config)
    return Setup(
        app, dataset, module, trainer, transport, initial, central_evaluate, trainer_name, why,
        stream,
    )  # fmt: skip


STREAM_ORDER = 0x57EA  # the stream's arrival orders draw from (seed, STREAM_ORDER)


def client_stream(config: SimulationConfig, dataset: FederatedDataset) -> Stream | None:
    """The clients' data arriving over time that ``config.stream`` describes, or ``None``."""
    settings = config.stream
    if settings.window == 0:
        return None
    return Stream.shuffled(
        dataset.clients,
        np.random.default_rng([config.execution.seed, STREAM_ORDER]),
        settings.horizon_s,
        settings.window,
        settings.drift,
        settings.drift_at_s,
        dataset.num_outputs if dataset.task == "classification" else 0,
    )


def preflight(
    app: App,
    module: Any,
    trainer: Trainer,
    clients: Mapping[str, ClientData],
    config: SimulationConfig,
) -> None:
    """A user's app, checked before round 1: the model's output fits every client's labels,
    and its own train and evaluate functions give the right structure on the first client
    (the result is thrown away)."""
    check_model_fits(module, app, clients)
    if app.train is None and app.evaluate is None:
        return
    first = next(iter(clients))
    params = params_from_module(module)
    task = FitTask(first, 0, config.round_config().fit_config())
    trainer.fit(params, task, clients[first])
    trainer.evaluate(params, first, 0, clients[first])
    load_params(module, params)


def local_transport(
    config: Mapping[str, Any], worker: int, workers: int, app: App | None = None
) -> InProcessTransport:
    """Worker ``worker`` of ``workers``: the data of the clients it serves (those
    ``worker_of`` gives it) and the trainer, rebuilt from the run's config and seed (and
    app), so identical to the server's, without pickling any data. Only its own clients'
    rows are kept (an app's other clients are never read)."""
    settings = from_mapping(config, "worker")
    setup = build(settings, app, server_only=True)
    clients = setup.dataset.clients
    mine = [c for c in clients if worker_of(c, workers) == worker]
    if not mine:  # more workers than clients: this one will never be asked
        mine = list(clients)[:1]
    secret = device_secret(settings.execution.seed)
    return InProcessTransport(subset(clients, mine), setup.trainer, device_secret=secret)


def worker_count(config: SimulationConfig) -> int:
    """How many processes or actors train clients: 1 in process, else ``workers`` or
    the cores available."""
    if config.execution.executor == "inprocess":
        return 1
    return config.execution.workers or available_cores()


def executor_transport(
    config: SimulationConfig, app: App | None = None
) -> ProcessTransport | RayTransport | None:
    """The transport ``config.executor`` asks for, or ``None`` for in-process. An app
    object (not named in ``config.app``) is pickled to the workers."""
    execution = config.execution
    if execution.executor == "inprocess":
        return None
    workers = worker_count(config)
    recipe = functools.partial(local_transport, config.to_dict(), app=app)
    if execution.executor == "ray":
        return RayTransport(recipe, workers, execution.threads, execution.ray_address)
    return ProcessTransport(recipe, workers, execution.threads)


def architecture(config: SimulationConfig, setup: Setup) -> dict[str, Any]:
    """What a serving process needs to rebuild the module that a run's params fit: the
    built-in model's settings, or the app (``None`` for an app object, which
    ``fedstream serve --app`` then names) with the shape and dtype of one input row, when
    the server has seen one."""
    dataset = setup.dataset
    seed = config.execution.seed
    if config.model.app is not None or dataset.num_features == 0:
        example = dataset.x_heldout
        if not len(example) and setup.transport is not None:
            example = dataset.clients[next(iter(dataset.clients))].x_train
        shape = list(example.shape[1:]) if len(example) else None
        dtype = str(example.dtype) if len(example) else "float32"
        return {
            "app": config.model.app,
            "task": dataset.task,
            "seed": seed,
            "input_shape": shape,
            "dtype": dtype,
        }
    return {
        "model": config.model.name,
        "in_features": dataset.num_features,
        "out_features": dataset.num_outputs,
        "hidden": list(config.model.hidden) if config.model.hidden is not None else None,
        "dtype": str(dataset.x_heldout.dtype),
        "task": dataset.task,
        "seed": seed,
    }


def choose_trainer(
    requested: str, module: Any, sample_dp: bool = False, app: App | None = None
) -> tuple[str, str]:
    """The trainer to use and why: ``auto`` picks the vectorised one when the model allows
    and the clients run plain SGD (DP-SGD's per-example gradients go one client at a time;
    an app's own loss, optimiser or training loop runs one client at a time)."""
    if not is_torch(module):
        return "keras", "a Keras model trains with the Keras adapter"
    custom = app is not None and app.custom_training
    if requested == "vectorized" and custom:
        raise ConfigError(
            "trainer",
            "vectorized",
            "'auto' or 'sequential' for an app with its own loss, metrics, optimiser, device "
            "or training functions (the vectorised trainer runs plain SGD on the standard loss)",
        )
    if requested != "auto":
        return requested, "as configured"
    if custom:
        return "sequential", "auto: the app brings its own training parts"
    if sample_dp:
        return "sequential", "auto: DP-SGD computes per-example gradients one client at a time"
    reason = VectorizedTrainer.unsupported(module)
    if reason is not None:
        return "sequential", f"auto: the vectorised trainer needs {reason}"
    if has_lstm(module):
        return "sequential", (
            "auto: torch's fused LSTM trains one client faster than a cohort's unrolled LSTM, "
            "except for small layers over short sequences (benchmarks/RESULTS.md); set "
            "trainer='vectorized' for those"
        )
    return "vectorized", "auto: the model can be vmapped"


def round_config(config: SimulationConfig, setup: Setup, deployed: bool = False) -> RoundConfig:
    """The round settings of ``config`` (for remote clients when ``deployed``), with the
    model entries that stay on the clients read from the model: FedBN's BatchNorm layers,
    FedPer's and FedRep's personal layers (``model.personal``'s modules and those the app's
    ``personal`` predicate picks)."""
    rounds = config.round_config(deployed)
    local: tuple[str, ...] = ()
    if config.model.local_batchnorm:
        local = batch_norm_entries(setup.module) if is_torch(setup.module) else ()
        if not local:
            raise ConfigError("local_batchnorm", True, "a model with BatchNorm layers")
    personal = personal_entries(setup.initial.params, config.model.personal, setup.app.personal)
    if config.strategy.name == "fedrep" and not personal:
        raise ConfigError(
            "model.personal",
            list(config.model.personal),
            "the modules of the personal head with FedRep (e.g. the last layer's name), or an "
            "app whose personal predicate picks them",
        )
    local += tuple(n for n in personal if n not in local)
    return replace(rounds, local_entries=local) if local else rounds


def describe(
    setup: Setup, config: SimulationConfig, reports: Sequence[RoundReport] = ()
) -> dict[str, Any]:
    """The data summary plus the trainer and executor chosen, for results.json, and with
    a stream its freshness over ``reports``. A server whose clients are elsewhere knows
    only how many there are."""
    summary = (
        setup.dataset.describe()
        if setup.transport is not None
        else {"dataset": setup.dataset.name, "clients": len(setup.dataset.clients)}
    )
    return {
        **summary,
        "trainer": setup.trainer_name,
        "trainer_reason": setup.trainer_reason,
        "executor": config.execution.executor,
        "workers": worker_count(config),
        "client_sampling": config.client_sampling,
        **({"privacy": privacy_terms(config)} if config.privacy.level != "none" else {}),
        **({"stream": stream_terms(setup.stream, reports)} if setup.stream is not None else {}),
    }


def stream_terms(stream: Stream, reports: Sequence[RoundReport]) -> dict[str, Any]:
    """How fresh the served models were (``data.stream.freshness``): simulated seconds
    from an example's arrival to the first served model trained on it."""
    waited = freshness(stream, reports)
    arrived = len(waited.lags_s) + waited.unserved
    served = len(waited.lags_s) > 0
    return {
        "window": stream.window,
        "drift": stream.drift,
        "drift_at_s": stream.drift_at_s,
        "freshness_p50_s": waited.percentile(50) if served else None,
        "freshness_p99_s": waited.percentile(99) if served else None,
        "never_served": waited.unserved / arrived if arrived else None,
    }


def privacy_terms(config: SimulationConfig) -> dict[str, Any]:
    """What a DP run's ε means, for results.json: the guarantee, the sampling the
    accountant assumed (the one that ran) and the neighbouring relation."""
    level = config.privacy.level
    fixed = level == "client" and config.client_sampling == "fixed"
    unit = "example" if level == "sample" else "client"
    return {
        "level": level,
        "delta": config.privacy.delta,
        "accountant": config.privacy.accountant,
        "sampling": "fixed-size without replacement" if fixed else "poisson",
        "neighbouring": f"replace one {unit}" if fixed else f"add or remove one {unit}",
        "noise_source": "OS CSPRNG" if config.privacy.secure_noise else "seeded (reproducible)",
    }


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op threads, then restore the previous setting. One thread per
    process is much faster than two for models this small (docs/architecture.md, Habits)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


RESUMABLE_CHANGES = frozenset({"run.rounds", "execution.threads"})


def _resume_config(
    out: Path, config: SimulationConfig | None, overrides: Mapping[str, Any]
) -> SimulationConfig:
    """The config a run in ``out`` started with, changed only where a resume may change it
    (more rounds, other threads); any other difference would break exactness."""
    try:
        started = from_mapping(json.loads((out / "config.json").read_text()), "resume")
    except FileNotFoundError:
        raise ConfigError(
            "resume", str(out), "a run folder with config.json (written when a run starts)"
        ) from None
    wanted = (config or started).with_changes(**overrides) if overrides else (config or started)
    before = started.to_dict()
    for section, values in wanted.to_dict().items():
        for name, value in values.items():
            key = f"{section}.{name}"
            if key not in RESUMABLE_CHANGES and before[section].get(name) != value:
                raise ConfigError(
                    key, value, f"{before[section].get(name)!r}, the value the run started with"
                )
    return wanted


def simulate(
    config: SimulationConfig | None = None,
    *,
    app: App | str | None = None,
    output_dir: str | Path | None = None,
    progress: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    store: str | Path | None = None,
    keep_checkpoints: int = 3,
    transport_factory: Callable[[Setup], Transport] | None = None,
    publish_to: PublishTarget | None = None,
    callbacks: Sequence[RunCallback] = (),
    **overrides: Mapping[str, Any],
) -> SimulationResult:
    """Run a simulated federated training and return its result.

    ``config`` defaults to ``SimulationConfig()``; keyword ``overrides`` change settings
    section by section (``simulate(strategy={"name": "fedprox", "mu": 0.1},
    run={"rounds": 5})``, as a TOML file's tables would). ``app`` is the user's own model,
    data and training (``fedstream.App``), or its import path ``"package.module:attribute"``;
    without one the built-in data set and model of ``config`` train. An app object must be
    passed again to resume its run.

    ``progress`` shows a live progress bar and a final table on the terminal.

    With ``output_dir`` the run is persistent, and the folder is its own for as long as it
    runs (a second run on it is refused; see ``fedstream.store.folder``). A new run needs
    an empty or new folder; ``overwrite`` clears the run folder there first, with its
    record in the store. The run writes ``config.json`` at the start, a checkpoint of the
    server state after every round (the newest ``keep_checkpoints``) under
    ``checkpoints/``, every round's report to ``rounds.jsonl``, every round (and its
    model, in the registry) in the SQLite run store ``store`` (default
    ``<output_dir>/../store.sqlite``, run id = the folder's name), and ``results.json``,
    ``metrics.csv`` and ``curves.png`` at the end. ``resume=True`` continues the run in
    ``output_dir`` from its newest checkpoint and ends bit for bit where an uninterrupted
    run would have (only ``rounds`` and ``threads`` may differ from the original settings);
    its history comes from the folder, so another or a lost store loses nothing.

    ``transport_factory`` replaces the in-process clients: a deployment passes one that
    returns its gRPC transport, and the same loop, checkpoints and store drive real clients.
    ``publish_to`` (a ``fedstream.serving.PublishTarget``) also pushes every round's model
    to a serving process (``fedstream serve --publish-token-file``), which may run on
    another machine, over TLS for an https URL; a push that fails is logged and training
    goes on. ``callbacks`` (``fedstream.tracking.RunCallback``: the TensorBoard and MLflow
    loggers, or your own) hear the run start, each round end and the run end.
    """
    if isinstance(app, str):
        overrides = merge(overrides, {"model": {"app": app}})
    app_object = app if isinstance(app, App) else None
    out = Path(output_dir) if output_dir is not None else None
    if resume:
        if out is None:
            raise ConfigError("resume", True, "an output_dir holding the run to continue")
        config = _resume_config(out, config, overrides)
    else:
        named = app if app is not None else config.model.app if config is not None else None
        population = app_population(named)
        if population:
            overrides = merge(overrides, population)
        config = (
            (config or SimulationConfig()).with_changes(**overrides)
            if overrides
            else (config or SimulationConfig())
        )
    if out is None:
        return _simulate(config, app_object, None, None, progress, resume, overwrite, 0,
                         transport_factory, publish_to, list(callbacks))  # fmt: skip
    with claim_run_folder(out, resume=resume, overwrite=overwrite):
        runs = RunStore(store or out.parent / "store.sqlite")
        return _simulate(config, app_object, out, runs, progress, resume, overwrite,
                         keep_checkpoints, transport_factory, publish_to,
                         list(callbacks))  # fmt: skip


def _simulate(
    config: SimulationConfig,
    app_object: App | None,
    out: Path | None,
    runs: RunStore | None,
    progress: bool,
    resume: bool,
    overwrite: bool,
    keep_checkpoints: int,
    transport_factory: Callable[[Setup], Transport] | None,
    publish_to: PublishTarget | None,
    callbacks: list[RunCallback],
) -> SimulationResult:
    """``simulate`` once its config is resolved and its run folder (if any) claimed."""
    started = time.perf_counter()
    run_id = out.name if out is not None else ""
    reports: list[RoundReport] = []
    history = RoundHistory(out) if out is not None else None
    with torch_threads(config.execution.threads):
        if transport_factory is not None:
            check_deployed_clock(config)
        setup = build(config, app_object, server_only=transport_factory is not None)
        state = setup.initial
        saved_clients: dict[str, ClientState] = {}
        if out is not None and runs is not None:
            if resume:
                state, reports, saved_clients = _restore(
                    out, setup, runs, run_id, config.run.rounds
                )
            else:
                _claim_run_id(runs, run_id, out, overwrite)
                atomic_write(out / "config.json", json.dumps(config.to_dict(), indent=1).encode())
            runs.start_run(run_id, config.to_dict(), str(out), setup.dataset.name)
        client_ids = sorted(setup.dataset.clients)
        workers = None if transport_factory else executor_transport(config, app_object)
        # the simulated devices, whose states a checkpoint keeps (a deployment's clients
        # keep theirs on their own disks)
        devices = None if transport_factory else workers or setup.transport
        transport = transport_factory(setup) if transport_factory else devices
        assert transport is not None
        if config.attack.kind in UPDATE_ATTACKS:
            if transport_factory is not None:
                raise ConfigError(
                    "attack.kind", config.attack.kind, "'none' in a deployment (attackers are "
                    "simulated for experiments; real clients attack by themselves)",
                )  # fmt: skip
            transport = with_attackers(transport, config, client_ids)
        if resume and devices is not None and saved_clients:
            devices.restore_client_states(saved_clients)
        start = RunStart(
            run_id or config.run_name, config.label, config.to_dict(), out, state.round
        )
        notify(callbacks, "on_run_start", start)
        try:
            steps = server_steps(
                config,
                setup,
                state,
                transport,
                client_ids,
                round_config(config, setup, deployed=transport_factory is not None),
                None if transport_factory else device_clock(config, setup),
                reports[-1].metrics.get("sim_time_s", 0.0) if reports else 0.0,
            )
            with RoundProgress(config.run.rounds, enabled=progress, done=state.round) as bar:
                for new_state, report in steps:
                    if out is not None and runs is not None:
                        save_checkpoint(
                            out / "checkpoints",
                            new_state,
                            report,
                            keep_checkpoints,
                            devices.client_states() if devices is not None else None,
                        )
                        assert history is not None
                        history.append(report)
                        runs.record_round(run_id, report)
                        runs.publish_model(
                            run_id,
                            report.round,
                            architecture(config, setup),
                            report.metrics,
                            new_state.params.to_bytes(),
                        )
                    if publish_to is not None:
                        _publish(publish_to, report, architecture(config, setup), new_state)
                    state = new_state
                    reports.append(report)
                    bar.advance(report)
                    notify(callbacks, "on_round_end", report)
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
                write_outputs(partial, describe(setup, config, reports), out, error=str(failure))
                runs.finish_run(run_id, error=str(failure))
            notify(callbacks, "on_run_end", partial, str(failure))
            raise
        finally:
            if workers is not None:
                workers.close()
    result = SimulationResult(
        config, state, tuple(reports), time.perf_counter() - started, out, *how(setup, config)
    )
    if out is not None and runs is not None:
        write_outputs(result, describe(setup, config, reports), out)
        runs.finish_run(run_id)
    notify(callbacks, "on_run_end", result, None)
    if progress:
        RoundProgress.print_summary(result)
    return result


def with_poisoned_clients(dataset: FederatedDataset, config: SimulationConfig) -> FederatedDataset:
    """``dataset`` with the attackers' training data poisoned by ``config.attack``'s data
    attack (label flipping or a backdoor), each attacker from its own seeded stream."""
    settings = config.attack
    if dataset.task != "classification":
        raise ConfigError("attack.kind", settings.kind, "a classification task (it changes labels)")
    if settings.target >= dataset.num_outputs:
        raise ConfigError("attack.target", settings.target, f"a class below {dataset.num_outputs}")
    attackers = choose_attackers(sorted(dataset.clients), settings.fraction, config.execution.seed)
    value = float(np.max(dataset.x_heldout)) if len(dataset.x_heldout) else 1.0

    def poisoner(client_id: str, data: ClientData) -> ClientData:
        rng = np.random.default_rng([config.execution.seed, ATTACK_STREAM, hash_id(client_id)])
        return poison(data, settings.kind, dataset.num_outputs, settings.target,
                      settings.poison_fraction, value, rng)  # fmt: skip

    return replace(dataset, clients=PoisonedClients(dataset.clients, attackers, poisoner))


def backdoor_probe(dataset: FederatedDataset, config: SimulationConfig) -> ClientData | None:
    """For a backdoor attack: the held-out examples of other classes than the target, with
    the trigger and labelled as the target, so their accuracy is the attack's success."""
    if config.attack.kind != "backdoor" or not len(dataset.x_heldout):
        return None
    others = dataset.y_heldout != config.attack.target
    value = float(np.max(dataset.x_heldout))
    x = add_trigger(dataset.x_heldout[others], value)
    y = np.full(len(x), config.attack.target, dtype=dataset.y_heldout.dtype)
    return ClientData(x[:0], y[:0], x, y)


def with_attackers(
    transport: Transport, config: SimulationConfig, client_ids: list[str]
) -> Transport:
    """The run's transport with ``config.attack``'s attackers among ``client_ids`` (as it
    is, unless the attack rewrites updates)."""
    settings = config.attack
    if settings.kind not in UPDATE_ATTACKS:
        return transport
    attackers = choose_attackers(client_ids, settings.fraction, config.execution.seed)
    count = config.clients_per_round_count()
    expected = round(count * settings.fraction)
    z = settings.z if settings.z is not None else alie_z(count, expected)
    log.info("attackers (%s): %s", settings.kind, ", ".join(attackers))
    return Attacks(
        transport, attackers, settings.kind, settings.scale, settings.noise_std, z,
        settings.ipm_epsilon, config.execution.seed,
    )  # fmt: skip


def how(setup: Setup, config: SimulationConfig) -> tuple[str, str, str]:
    """The trainer (and why), the executor and the data, as the summary shows them."""
    executor = config.execution.executor
    if executor != "inprocess":
        executor += f" × {worker_count(config)}"
    return f"{setup.trainer_name} ({setup.trainer_reason})", executor, setup.dataset.name


def _publish(
    target: PublishTarget, report: RoundReport, arch: dict[str, Any], state: ServerState
) -> None:
    from fedstream.serving.publish import publish

    try:
        publish(target, report.round, arch, report.metrics, state.params.to_bytes())
    except OSError as exc:  # the serving side being down must not stop training
        log.warning("could not publish round %d to %s: %s", report.round, target.url, exc)


def _restore(
    out: Path, setup: Setup, runs: RunStore, run_id: str, rounds: int
) -> tuple[ServerState, list[RoundReport], dict[str, ClientState]]:
    """The newest intact checkpoint's state, the reports of the rounds up to it, and the
    simulated clients' states it saved. A damaged newer checkpoint is passed over, with a
    warning naming it and why. The reports come from the run folder's ``rounds.jsonl``
    (from the store for a run made before it), plus the checkpoint's own round if a crash
    came between the two; the store's record is rebuilt from them, and rounds after the
    checkpoint are dropped and rerun. A history that is nowhere is an error, never a
    results.json that silently starts at the resumed round."""
    restored = newest_intact_checkpoint(out / "checkpoints")
    if restored is None:
        return setup.initial, [], {}
    folder, state, report = restored.folder, restored.state, restored.report
    if rounds < state.round:  # checked before the store or the history is touched
        raise ConfigError(
            "run.rounds",
            rounds,
            f"at least {state.round}, the rounds the run in {out} has done (a resume runs "
            "the rounds after them)",
        )
    try:
        setup.initial.params.check_compatible(state.params, f"checkpoint {folder}")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    history = RoundHistory(out)
    stored = {r.round: r for r in runs.reports(run_id)} if runs.has_run(run_id) else {}
    known = {r.round: r for r in history.read(state.round)} if history.exists() else stored
    if report is not None and report.round not in known:
        known[report.round] = report
        history.append(report)
    missing = sorted(set(range(1, state.round + 1)) - set(known))
    if missing:
        raise ConfigError(
            "resume",
            str(out),
            f"the history of rounds {missing[0]}–{missing[-1]}: {HISTORY_FILE} in the run "
            f"folder, or the run store that recorded them (--store; {runs.path} has "
            f"{'no record of this run' if not stored else f'{len(stored)} of them'})",
        )
    if set(stored) != set(known):
        runs.start_run(run_id, {}, str(out))
        for number in sorted(known):
            runs.record_round(run_id, known[number])
    runs.forget_after(run_id, state.round)
    return state, [known[r] for r in sorted(known) if r <= state.round], restored.clients


def _claim_run_id(runs: RunStore, run_id: str, out: Path, overwrite: bool) -> None:
    """A new run's id is its folder's name: a run of that id already in the store is the
    same folder's old run (cleared with ``overwrite``) or another folder's of the same
    name, which must not mix its rounds and models with this one's."""
    if not runs.has_run(run_id):
        return
    if overwrite:
        runs.delete_run(run_id)
        return
    raise ConfigError(
        "output_dir",
        str(out),
        f"a folder whose name is not already a run in {runs.path} (run {run_id!r} is, from "
        f"{runs.run(run_id)['output_dir']}): choose another folder name, another --store, "
        "or --overwrite to replace that run",
    )
