"""Model entries that never leave a client: integer counters, and those the run keeps local.

A model's state has entries the federation shares (weights, and by default BatchNorm's
running statistics, averaged like weights) and entries each client keeps for itself:

- integer entries, always: counters such as BatchNorm's ``num_batches_tracked`` are not
  statistics to average, and sending them would tell the server how many steps a client
  took;
- the entries a run names in ``RoundConfig.local_entries``: FedBN keeps every BatchNorm
  entry local (``batchnorm_entries``), FedPer a personal head.

The server's model keeps its initial value of every local entry (central evaluation uses
it), and sends the whole model; a client starts from it, then from its own values kept in
its ``ClientState`` under ``LOCAL``. Only the shared entries are trained on as a
federation: they alone make up the update (its layout is ``shared_part`` of the model).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from fedstream.client.state import ClientState
from fedstream.errors import ConfigError
from fedstream.params import Params
from fedstream.types import ClientUpdate

LOCAL = "local"
"""The client-state entry that holds the client's own values of its local entries."""


def local_names(params: Params, keep_local: Sequence[str] = ()) -> tuple[str, ...]:
    """The entries of ``params`` that stay on the clients: the integer ones, and those named
    in ``keep_local`` (each must exist), in the model's order."""
    unknown = sorted(set(keep_local) - set(params))
    if unknown:
        raise ConfigError(
            "local_entries", unknown, f"names of model entries such as {list(params)[:3]}"
        )
    wanted = set(keep_local)
    return tuple(
        name
        for name, array in params.items()
        if name in wanted or not np.issubdtype(array.dtype, np.floating)
    )


def personal_entries(
    params: Params, modules: Sequence[str], predicate: Callable[[str], bool] | None = None
) -> tuple[str, ...]:
    """FedPer's personal layers: the entries of ``params`` under each of ``modules`` (a
    module's name or a dotted prefix: ``fc2`` names ``fc2.weight`` and ``fc2.bias``), and
    those whose name ``predicate`` (an app's ``personal``) holds for, in the model's order.
    Each module, and the predicate, must pick an entry, and some floating-point entry must
    stay shared, or nothing would be federated."""
    for module in modules:
        if not any(n == module or n.startswith(f"{module}.") for n in params):
            layers = sorted({n.rpartition(".")[0] or n for n in params})
            raise ConfigError("model.personal", module, f"a module of the model, one of {layers}")
    shown = getattr(predicate, "__name__", repr(predicate))
    picked = {n for n in params if predicate is not None and bool(predicate(n))}
    if predicate is not None and not picked:
        raise ConfigError(
            "app.personal",
            shown,
            f"a predicate true for some of the model's entries {list(params)[:4]}",
        )
    chosen = tuple(
        n for n in params if n in picked or any(n == m or n.startswith(f"{m}.") for m in modules)
    )
    shared = [
        n for n, a in params.items() if n not in chosen and np.issubdtype(a.dtype, np.floating)
    ]
    if chosen and not shared:
        field = "model.personal" if modules else "app.personal"
        raise ConfigError(
            field,
            list(modules) if modules else shown,
            "some of the model's layers, not all of them (nothing would be shared)",
        )
    return chosen


def shared_part(params: Params, local: Sequence[str]) -> Params:
    """``params`` without the ``local`` entries: the layout of every update."""
    if not local:
        return params
    kept = set(local)
    return Params({n: a for n, a in params.items() if n not in kept})


def with_shared(params: Params, shared: Params) -> Params:
    """``params`` with its shared entries replaced by ``shared``'s (the local ones kept)."""
    if shared.spec == params.spec:
        return shared
    return Params({n: shared.get(n, a) for n, a in params.items()})


def start_params(
    received: Params, state: ClientState, local: Sequence[str] | None = None
) -> Params:
    """The model a client trains or evaluates from: the server's ``received`` params, with
    the client's own values of its local entries (those in ``local``, or all it keeps)."""
    own = state.get(LOCAL)
    if not own:
        return received
    names = set(own) if local is None else set(local) & set(own)
    if not names:
        return received
    return Params({n: own[n] if n in names else a for n, a in received.items()})


def keep_local(
    update: ClientUpdate, start: Params, local: Sequence[str], state: ClientState
) -> tuple[ClientUpdate, ClientState]:
    """Split a trained update: its payload keeps only the shared entries, and the client's
    next values of its local entries (``start + delta``) go into its state."""
    if not local or not all(n in update.payload for n in local):
        return update, state  # a payload without them (a gradient) leaves them as they were
    own = Params({n: start[n] + update.payload[n] for n in local})
    payload = shared_part(update.payload, local)
    return ClientUpdate(
        update.client_id, update.round, payload, update.weight, update.metrics, update.extras
    ), {**state, LOCAL: own}
