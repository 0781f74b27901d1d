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
"""

from __future__ import annotations

from collections.abc import Mapping

from fedstream.client.state import ClientState
from fedstream.errors import ConfigError
from fedstream.params import Params

ALGORITHMS = ("sgd", "scaffold")
STEPS = "steps"
"""The metric a trainer reports, when the task carries a gradient correction, with how many
local steps it took; the client takes it out before the update leaves."""
EXTRA = "@"
CONTROL = "@c"
CLIENT_CONTROL = "scaffold.c"


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
