"""What a client does around its local training, by the algorithm its task names.

Server quantities a client needs beside the model, and sums a strategy asks for beside
the model delta, travel inside the same ``Params`` as entries named ``@<name>/<param>``
(a model's own entries never start with ``@``), so every transport, codec and secure sum
carries them unchanged.

- ``"sgd"``: nothing around the training.
- ``"scaffold"`` (Karimireddy et al. 2020, option II): the server sends its control
  variate c as ``@c/…``; the client keeps its own c_i in its state (``"scaffold.c"``, zero
  at first) and adds c − c_i to every local gradient. After K local steps of size η it
  sets c_i⁺ = c_i − c + (x − y_i)/(K·η), where x is the model it started from and y_i
  where it ended, and sends Δy_i = y_i − x with Δc_i = c_i⁺ − c_i as ``@c/…``.
- ``"fednova"`` (Wang et al. 2020, "Tackling the Objective Inconsistency Problem in
  Heterogeneous Federated Optimization"): after τ_i local SGD steps the client sends its
  normalised update Δy_i / a_i, where a_i = τ_i for plain SGD and
  a_i = (1 − (1 − η·μ)^τ_i)/(η·μ) under FedProx's proximal term μ (the sum of the
  weights its τ_i steps carry), and w_i·a_i (w_i its weight) as the scalar extra
  ``"fednova.steps"`` inside the same sum, from which the server takes
  τ_eff = Σ w_i·a_i / Σ w_i (``strategies.fednova``).
- ``"feddyn"`` (Acar et al. 2021, "Federated Learning Based on Dynamic Regularization"):
  the client keeps g_i, its gradient at its last local optimum (``"feddyn.g"``, zero at
  first), and minimises L_i(θ) − ⟨g_i, θ⟩ + α/2·‖θ − x‖²: FedProx's proximal term with
  μ = α, and −g_i added to every local gradient. Afterwards g_i ← g_i − α·Δy_i. It sends
  its plain delta; g_i never leaves the client.
- ``"ditto"`` (Li et al. 2021, "Ditto: Fair and Robust Federated Learning Through
  Personalization"): the task trains the global model as plain SGD does, and then the
  client's personal model v_i (``"ditto.v"``, the global model at first) for as many
  epochs on min F_i(v) + λ/2·‖v − x‖², x the model the server sent. Only the global
  model's delta is sent; v_i stays on the client, which evaluates both.
- ``"fedrep"`` (Collins et al. 2021, "Exploiting Shared Representations for Personalized
  Federated Learning"): the model's personal head (``FitConfig.local_entries``) stays on
  the client. Each task first trains the head alone for ``personal_epochs`` epochs, the
  shared body frozen, from the client's own head over the body the server sent; then the
  body alone for the round's epochs, the new head frozen. It sends the body's delta and
  keeps the head.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from fedstream.client.base import FitTask
from fedstream.client.state import ClientState
from fedstream.errors import ConfigError
from fedstream.params import Params
from fedstream.types import ClientUpdate, FitConfig

ALGORITHMS = ("sgd", "scaffold", "fednova", "feddyn", "ditto", "fedrep")
STEPS = "steps"
"""The metric a trainer reports, when the task's algorithm is not plain ``"sgd"``, with how
many local steps it took; the client takes it out before the update leaves."""
EXTRA = "@"
CONTROL = "@c"
CLIENT_CONTROL = "scaffold.c"
DYN_GRADIENT = "feddyn.g"
PERSONAL_MODEL = "ditto.v"
NOVA_STEPS = "fednova.steps"
"""The scalar extra of a FedNova update: its weight × a_i (module docstring)."""


def split_extras(params: Params) -> tuple[Params, dict[str, Params]]:
    """``params`` as the model's own entries and the extras, grouped by ``@<name>``."""
    if not any(name.startswith(EXTRA) for name in params):
        return params, {}
    model: dict[str, object] = {}
    extras: dict[str, dict[str, object]] = {}
    for name, array in params.items():
        if name.startswith(EXTRA):
            group, _, entry = name.partition("/")
            extras.setdefault(group, {})[entry] = array
        else:
            model[name] = array
    return Params(model), {g: Params(a) for g, a in extras.items()}  # type: ignore[arg-type]


def join_extras(model: Params, extras: Mapping[str, Params]) -> Params:
    """The inverse of :func:`split_extras`."""
    if not extras:
        return model
    joined = dict(model.items())
    for group, params in extras.items():
        joined |= {f"{group}/{name}": array for name, array in params.items()}
    return Params(joined)


def check_algorithm(name: str) -> None:
    if name not in ALGORITHMS:
        raise ConfigError("algorithm", name, f"one of {list(ALGORITHMS)}")


def scaffold_correction(server_control: Params, state: ClientState) -> Params:
    """c − c_i: what SCAFFOLD adds to each local gradient (c_i is zero until the client
    has one)."""
    own = state.get(CLIENT_CONTROL)
    return server_control if own is None else server_control - own


def scaffold_finish(
    delta: Params, server_control: Params, state: ClientState, steps: int, lr: float
) -> tuple[Params, ClientState]:
    """Option II of SCAFFOLD: c_i⁺ = c_i − c − Δy/(K·η) (Δy = y_i − x); returns the
    payload Δy joined with Δc = c_i⁺ − c_i, and the state holding c_i⁺. A client that took
    no step keeps its c_i and sends Δc = 0."""
    own = state.get(CLIENT_CONTROL, server_control.zeros_like())
    if steps <= 0:
        return join_extras(delta, {CONTROL: own.zeros_like()}), state
    step = delta.zip_map(server_control, lambda d, _c: d / (steps * lr))
    updated = own.zip_map(server_control, lambda o, c: o - c).zip_map(step, lambda v, s: v - s)
    change = updated - own
    return join_extras(delta, {CONTROL: change}), {**state, CLIENT_CONTROL: updated}


def nova_steps(steps: int, lr: float, mu: float) -> float:
    """a_i of FedNova: how much τ local SGD steps of size ``lr`` weigh in the update, τ
    itself for plain SGD, Σ_k (1 − η·μ)^k = (1 − (1 − η·μ)^τ)/(η·μ) when each step also
    pulls back towards the start with FedProx's ``mu``."""
    if mu == 0 or steps == 0:
        return float(steps)
    shrink = lr * mu
    return (1 - (1 - shrink) ** steps) / shrink


def fednova_finish(update: ClientUpdate, steps: int, lr: float, mu: float) -> ClientUpdate:
    """FedNova's upload: the delta divided by a_i (``nova_steps``), with weight × a_i as
    the extra ``NOVA_STEPS``. A client that took no step sends its zero delta and 0."""
    scale = nova_steps(steps, lr, mu)
    payload = update.payload if scale == 0 else update.payload.map(lambda d: d / scale)
    extras = {**update.extras, NOVA_STEPS: update.weight * scale}
    return replace(update, payload=payload, extras=extras)


def max_nova_steps(weight: float, local_epochs: int, batch_size: int) -> float:
    """The largest ``NOVA_STEPS`` extra an honest client of ``weight`` examples can send:
    weight × its most local steps, epochs × ⌈weight / batch⌉ (a_i ≤ τ_i; one step an
    epoch with ``batch_size`` 0, the full batch)."""
    per_epoch = math.ceil(weight / batch_size) if batch_size > 0 else 1
    return weight * local_epochs * per_epoch


def extras_problem(update: ClientUpdate, config: FitConfig) -> str | None:
    """Why the extras ``update`` sends cannot come from an honest client running
    ``config``'s algorithm (``None`` when they can): the server's check, where it sees
    each update. FedNova's step count must lie in [0, ``max_nova_steps``]."""
    if config.algorithm != "fednova":
        return None
    steps = update.extras.get(NOVA_STEPS)
    most = max_nova_steps(update.weight, config.local_epochs, config.batch_size)
    if steps is None or not 0 <= steps <= most:
        return (
            f"extras[{NOVA_STEPS!r}]={steps!r} is invalid: expected weight × local steps, "
            f"in [0, {most:g}]"
        )
    return None


def feddyn_correction(state: ClientState) -> Params | None:
    """−g_i: what FedDyn adds to each local gradient (none until the client has a g_i)."""
    own = state.get(DYN_GRADIENT)
    return None if own is None else own.map(lambda g: -g)


def feddyn_finish(delta: Params, state: ClientState, alpha: float) -> ClientState:
    """The state after a FedDyn task: g_i ← g_i − α·Δy_i (module docstring)."""
    own = state.get(DYN_GRADIENT, delta.zeros_like())
    return {**state, DYN_GRADIENT: own - delta * alpha}


def ditto_task(received: Params, task: FitTask, state: ClientState) -> tuple[Params, FitTask]:
    """Where Ditto's personal pass starts (v_i, or ``received`` at first) and its task:
    the round's epochs and batch on its own shuffle, with the pull λ·(v − x) written as
    FedProx's term around the start v₀ plus the constant correction λ·(v₀ − x), since
    λ·(v − x) = λ·(v − v₀) + λ·(v₀ − x)."""
    start = state.get(PERSONAL_MODEL, received)
    lam = task.config.personal_lambda
    config = replace(
        task.config, algorithm="sgd", proximal_mu=lam, seed=task.config.seed ^ PERSONAL_STREAM
    )
    correction = start.zip_map(received, lambda v, x: lam * (v - x))
    return start, replace(task, config=config, correction=correction)


PERSONAL_STREAM = 0x5D1770
"""XORed into a task's seed for Ditto's personal pass, so it shuffles on its own."""


def fedrep_head_task(start: Params, task: FitTask) -> FitTask:
    """FedRep's first pass: the round's batch, ``personal_epochs`` epochs on its own
    shuffle, every entry but the personal head (``local_entries``) frozen."""
    config = task.config
    head = set(config.local_entries)
    config = replace(
        config,
        algorithm="sgd",
        local_epochs=config.personal_epochs,
        seed=config.seed ^ HEAD_STREAM,
    )
    return replace(task, config=config, frozen=tuple(n for n in start if n not in head))


HEAD_STREAM = 0x4EAD5
"""XORed into a task's seed for FedRep's head pass, so it shuffles on its own."""
