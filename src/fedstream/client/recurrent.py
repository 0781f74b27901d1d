"""Recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``) in vectorised cohorts.

torch's fused RNN kernels have no ``vmap`` batching rule, so a cohort could not train a
recurrent model together. Inside :meth:`UnrolledRecurrence.unrolled`, each recurrent layer
runs as explicit matrix products over time instead, which ``vmap`` batches over clients:

- the input projection ``x · W_ihᵀ + b_ih`` of every time step is one matmul (autograd);
- the recurrence ``h_{t−1} · W_hhᵀ`` runs step by step in :class:`_Scan`, an autograd
  function whose backward pass is written out: it walks back through time for the state
  gradients, then takes the recurrent weights' gradient for all steps in one matmul
  (``Σ_t dr_tᵀ · h_{t−1}``), as cuDNN and oneDNN do. Left to autograd, that gradient is a
  small matmul and an accumulation per step, about 1.5× slower on LEAF's LSTM.

The gate equations are torch's own (``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` docs), with the
same parameter names and layouts, so a module's state dict is unchanged. Results equal the
fused kernels' to float rounding (``tests/client/test_recurrent.py`` compares outputs,
final states and every gradient in float64). Supported: any number of layers, bias or
none, either ``batch_first``, bidirectional, a given initial state. Not supported (the
layer is refused with the reason): dropout between layers (its draws could not be replayed
per client, ``client.dropout``), LSTM projections (``proj_size``), and packed sequences.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from fedstream.errors import ConfigError

RECURRENT = (nn.LSTM, nn.GRU, nn.RNN)


def has_lstm(module: nn.Module) -> bool:
    """Whether ``module`` holds an LSTM: on a CPU, torch runs it as one fused oneDNN kernel
    that trains a client faster than a cohort's unrolled LSTM, except for small layers over
    short sequences (its GRU and RNN kernels are slower than the unrolled cohort at every
    size measured, benchmarks/RESULTS.md)."""
    return any(isinstance(m, nn.LSTM) for m in module.modules())


def unbatchable(module: nn.Module) -> str | None:
    """Why the recurrent layers of ``module`` cannot run in a cohort, or ``None``."""
    for name, layer in module.named_modules():
        if not isinstance(layer, nn.RNNBase):
            continue
        if type(layer) not in RECURRENT:
            kind = type(layer).__name__
            return f"recurrent layers of torch's own LSTM, GRU or RNN types; {name!r} is {kind}"
        if layer.dropout and layer.num_layers > 1:
            return (
                "recurrent layers without dropout between layers (it draws inside the fused "
                f"kernel, which cannot be replayed per client); {name!r} has dropout "
                f"{layer.dropout}"
            )
        if getattr(layer, "proj_size", 0):
            return f"LSTM layers without projections; {name!r} has proj_size {layer.proj_size}"
    return None


class UnrolledRecurrence:
    """The recurrent layers of ``module``, run as vmappable matmuls (module docstring)."""

    def __init__(self, module: nn.Module) -> None:
        self.layers = [m for m in module.modules() if isinstance(m, RECURRENT)]
        self.refusal = unbatchable(module)

    @contextmanager
    def unrolled(self) -> Iterator[None]:
        """Every recurrent layer's forward is :func:`unrolled_forward` until exit; a layer
        it cannot unroll is refused here, before any forward pass."""
        if self.refusal is not None:
            raise ConfigError("model", "recurrent layers", self.refusal)
        for layer in self.layers:
            layer.forward = partial(unrolled_forward, layer)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for layer in self.layers:
                del layer.forward


def cell_kind(layer: nn.RNNBase) -> str:
    """The cell equations ``layer`` uses: ``lstm``, ``gru``, ``rnn_tanh`` or ``rnn_relu``."""
    if isinstance(layer, nn.LSTM):
        return "lstm"
    if isinstance(layer, nn.GRU):
        return "gru"
    return "rnn_relu" if layer.nonlinearity == "relu" else "rnn_tanh"


def unrolled_forward(layer: nn.RNNBase, input: Any, hx: Any = None) -> tuple[Any, Any]:
    """What ``layer(input, hx)`` returns, computed by :func:`scan_layer` per layer and
    direction: ``(output, h_n)``, or ``(output, (h_n, c_n))`` for an LSTM. ``input`` is
    (batch, time, features) with ``batch_first``, else (time, batch, features), or
    (time, features) unbatched."""
    if isinstance(input, PackedSequence):
        raise ConfigError(
            "input", "PackedSequence", "padded tensors in a vectorised cohort (pad the batch)"
        )
    kind = cell_kind(layer)
    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(0 if layer.batch_first else 1)
    if layer.batch_first:
        x = x.transpose(0, 1)  # (time, batch, features) from here on
    directions = 2 if layer.bidirectional else 1
    states = layer.num_layers * directions
    shape = (states, x.shape[1], layer.hidden_size)
    if hx is not None and not batched:  # unbatched states (layers, hidden) gain a batch
        hx = tuple(s.unsqueeze(1) for s in hx) if kind == "lstm" else hx.unsqueeze(1)
    if kind == "lstm":
        h0, c0 = hx if hx is not None else (x.new_zeros(shape), x.new_zeros(shape))
    else:
        h0 = hx if hx is not None else x.new_zeros(shape)
        c0 = None
    finals_h: list[torch.Tensor] = []
    finals_c: list[torch.Tensor] = []
    for depth in range(layer.num_layers):
        outputs = []
        for direction in range(directions):
            index = depth * directions + direction
            suffix = f"_l{depth}" + ("_reverse" if direction else "")
            sequence = x.flip(0) if direction else x
            start_c = c0[index] if c0 is not None else None
            hs, cs = scan_layer(layer, kind, suffix, sequence, h0[index], start_c)
            outputs.append(hs.flip(0) if direction else hs)
            finals_h.append(hs[-1])
            if cs is not None:
                finals_c.append(cs[-1])
        x = outputs[0] if directions == 1 else torch.cat(outputs, -1)
    output = x.transpose(0, 1) if layer.batch_first else x
    h_n = torch.stack(finals_h)
    c_n = torch.stack(finals_c) if kind == "lstm" else None
    if not batched:
        output = output.squeeze(0 if layer.batch_first else 1)
        h_n = h_n.squeeze(1)
        c_n = c_n.squeeze(1) if c_n is not None else None
    return output, ((h_n, c_n) if kind == "lstm" else h_n)


def scan_layer(
    layer: nn.RNNBase,
    kind: str,
    suffix: str,
    x: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One layer and direction of ``layer`` (its weights named with ``suffix``, such as
    ``_l1_reverse``) over ``x`` (time, batch, features), from the states ``h0`` and (LSTM)
    ``c0`` (batch, hidden): its hidden states and (LSTM) cell states, (time, batch, hidden)."""
    w_ih, w_hh = getattr(layer, "weight_ih" + suffix), getattr(layer, "weight_hh" + suffix)
    recurrent_bias = w_hh.new_zeros(w_hh.shape[0])
    bias: torch.Tensor | None = None
    if layer.bias:
        b_ih, b_hh = getattr(layer, "bias_ih" + suffix), getattr(layer, "bias_hh" + suffix)
        if kind == "gru":  # a GRU's b_hh sits inside r ⊙ (W_hn·h + b_hn)
            bias, recurrent_bias = b_ih, b_hh
        else:  # elsewhere both biases simply add to the gates
            bias = b_ih + b_hh
    # one (T·B, F) × (F, G) product per client: vmap turns a 3-D linear into T small ones
    flat = x.reshape(-1, x.shape[-1])
    projected = flat @ w_ih.T if bias is None else torch.addmm(bias, flat, w_ih.T)
    inputs = projected.view(*x.shape[:-1], -1)
    start_c = c0 if c0 is not None else h0.new_zeros(())
    one = [t.unsqueeze(0) for t in (inputs, w_hh, recurrent_bias, h0, start_c)]  # a stack of 1
    hs, cs, _, _ = _Scan.apply(kind, *one)  # type: ignore[no-untyped-call]
    return hs.squeeze(0), (cs.squeeze(0) if kind == "lstm" else None)


class _Scan(torch.autograd.Function):
    """The recurrence of N independent layers (N clients'): for t = 1…T,
    ``r_t = h_{t−1} · W_hhᵀ + b`` (``b`` is the GRU's b_hh, else zero) and
    ``(h_t, c_t) = cell(inputs_t, r_t, h_{t−1}, c_{t−1})``.

    Inputs: the cell kind, ``inputs`` (N, T, B, G), ``w_hh`` (N, G, H), ``b`` (N, G),
    ``h0`` (N, B, H), and ``c0`` (N, B, H) for an LSTM, else a placeholder (N,). Outputs:
    ``hs`` (N, T, B, H); ``cs`` (N, T, B, H) for an LSTM; and, not differentiable, what
    the backward pass keeps of each step, time-major so that each step's part is
    contiguous: the activated gates (T, N, B, G), and the LSTM's tanh(c_t) or the GRU's
    recurrent part of n (T, N, B, H). What a kind does not have is an (N, 0) or (0, N)
    placeholder.

    Under ``vmap`` (:meth:`vmap`), the clients' stacks are joined into one, so the whole
    cohort's recurrence runs as plain batched matmuls, with none of vmap's per-operation
    cost on the T·layers small steps. Each step writes into buffers made once: joining
    small per-step pieces, and fresh large tensors (page faults), cost more than the
    arithmetic on a CPU."""

    @staticmethod
    def forward(
        kind: str,
        inputs: torch.Tensor,
        w_hh: torch.Tensor,
        b: torch.Tensor,
        h0: torch.Tensor,
        c0: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        count, width = inputs.shape[1], inputs.shape[-1]
        sequence = (h0.shape[0], count, *h0.shape[1:])
        gated = kind in ("lstm", "gru")
        steps = (count, *h0.shape)  # time-major
        hs = h0.new_empty(sequence)
        gates = h0.new_empty((*steps[:-1], width) if gated else (0, h0.shape[0]))
        extra = h0.new_empty(steps if gated else (0, h0.shape[0]))
        cs = h0.new_empty(sequence if kind == "lstm" else (h0.shape[0], 0))
        w_t = w_hh.transpose(1, 2)
        h, c = h0, c0
        for t in range(count):
            x = inputs[:, t]
            if kind == "lstm":
                h, c = _lstm_step(x, h, c, w_t, gates[t], extra[t], hs[:, t], cs[:, t])
            elif kind == "gru":
                h = _gru_step(x, h, w_t, b, gates[t], extra[t], hs[:, t])
            else:
                pre = torch.baddbmm(x, h, w_t)
                h = hs[:, t]
                h.copy_(pre.tanh_() if kind == "rnn_tanh" else pre.relu_())
        return hs, cs, gates, extra

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        kind, _, w_hh, _, h0, c0 = inputs
        hs, cs, gates, extra = output
        ctx.kind = kind
        ctx.set_materialize_grads(False)  # no zero-filled gradients for unused outputs
        ctx.mark_non_differentiable(gates, extra)
        ctx.save_for_backward(w_hh, h0, c0, hs, cs, gates, extra)

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[Any, ...], kind: str, *tensors: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], tuple[int, int, int, int]]:
        """The rule under ``vmap``: the (K, N, …) batch as one stack of K·N layers."""
        size = info.batch_size
        flat = []
        for tensor, dim in zip(tensors, in_dims[1:], strict=True):
            batched = tensor.movedim(dim, 0) if dim is not None else _expanded(tensor, 0, size)
            flat.append(batched.flatten(0, 1))
        hs, cs, gates, extra = _Scan.apply(kind, *flat)  # type: ignore[no-untyped-call]
        split = [o.unflatten(0, (size, -1)) for o in (hs, cs)]
        kept = [o.unflatten(1, (size, -1)) for o in (gates, extra)]
        return (*split, *kept), (0, 0, 1, 1)

    @staticmethod
    def backward(
        ctx: Any, d_hs: torch.Tensor | None, d_cs: torch.Tensor | None, *_: Any
    ) -> tuple[None, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        d_in, d_w_hh, d_b, dh, dc = _ScanGradients.apply(  # type: ignore[no-untyped-call]
            ctx.kind, d_hs, d_cs, *ctx.saved_tensors
        )
        return None, d_in, d_w_hh, d_b, dh, (dc if ctx.kind == "lstm" else None)


class _ScanGradients(torch.autograd.Function):
    """The backward pass of :class:`_Scan`: back through time for the state gradients,
    then the recurrent weights' gradient for every step at once. An autograd function of
    its own so that it, too, runs on plain stacked tensors under ``vmap`` (DP-SGD's
    per-example gradients take ``vmap`` of ``grad``, which runs the backward pass batched).
    It is not itself differentiable (no double backward)."""

    # where each input's stack axis N sits (the kept gates are time-major); None: not a tensor
    STACK_AXES = (None, 0, 0, 0, 0, 0, 0, 0, 1, 1)

    @staticmethod
    def forward(
        kind: str,
        d_hs: torch.Tensor | None,
        d_cs: torch.Tensor | None,
        w_hh: torch.Tensor,
        h0: torch.Tensor,
        c0: torch.Tensor,
        hs: torch.Tensor,
        cs: torch.Tensor,
        gates: torch.Tensor,
        extra: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        lstm = kind == "lstm"
        count, width = hs.shape[1], w_hh.shape[1]
        d_in = h0.new_empty((h0.shape[0], count, h0.shape[1], width))
        d_r = h0.new_empty(d_in.shape) if kind == "gru" else d_in
        dh = torch.zeros_like(h0)
        dc = torch.zeros_like(h0) if lstm else None
        for t in range(count - 1, -1, -1):
            h_prev = hs[:, t - 1] if t else h0
            if d_hs is not None:
                dh = dh + d_hs[:, t]
            if lstm:
                assert dc is not None
                if d_cs is not None:
                    dc = dc + d_cs[:, t]
                c_prev = cs[:, t - 1] if t else c0
                dc = _lstm_step_back(gates[t], extra[t], dh, dc, c_prev, d_in[:, t])
                dh = torch.bmm(d_in[:, t], w_hh)
            elif kind == "gru":
                direct = _gru_step_back(gates[t], extra[t], dh, h_prev, d_in[:, t], d_r[:, t])
                dh = torch.baddbmm(direct, d_r[:, t], w_hh)
            else:
                h = hs[:, t]
                slope = 1 - h * h if kind == "rnn_tanh" else (h > 0).to(h.dtype)
                torch.mul(dh, slope, out=d_in[:, t])
                dh = torch.bmm(d_in[:, t], w_hh)
        # Σ_t dr_tᵀ · h_{t−1} for every step at once: steps 2…T against hs, step 1 against h0
        layers = h0.shape[0]
        later = d_r[:, 1:].reshape(layers, -1, width).transpose(1, 2)
        d_w_hh = torch.baddbmm(
            d_r[:, 0].transpose(1, 2) @ h0, later, hs[:, :-1].reshape(layers, -1, hs.shape[-1])
        )
        d_b = d_r.reshape(layers, -1, width).sum(1)
        return d_in, d_w_hh, d_b, dh, dc if dc is not None else h0.new_empty((h0.shape[0], 0))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        pass

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[Any, ...], kind: str, *tensors: torch.Tensor | None
    ) -> tuple[tuple[torch.Tensor, ...], tuple[int, ...]]:
        """The rule under ``vmap``: each (K, N, …) stack as one of K·N layers."""
        size = info.batch_size
        flat: list[torch.Tensor | None] = []
        for tensor, dim, axis in zip(
            tensors, in_dims[1:], _ScanGradients.STACK_AXES[1:], strict=True
        ):
            if tensor is None:
                flat.append(None)
                continue
            assert axis is not None
            batched = (
                tensor.movedim(dim, axis) if dim is not None else _expanded(tensor, axis, size)
            )
            flat.append(batched.flatten(axis, axis + 1))
        outputs = _ScanGradients.apply(kind, *flat)  # type: ignore[no-untyped-call]
        return tuple(o.unflatten(0, (size, -1)) for o in outputs), (0,) * len(outputs)

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:
        raise RuntimeError("the unrolled recurrence's gradient is not differentiable")


def _expanded(tensor: torch.Tensor, axis: int, size: int) -> torch.Tensor:
    """``tensor`` repeated ``size`` times along a new axis ``axis`` (a view)."""
    shape = list(tensor.shape)
    shape.insert(axis, size)
    return tensor.unsqueeze(axis).expand(shape)


def _lstm_step(
    x: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    w_t: torch.Tensor,
    gates: torch.Tensor,
    tanh_c: torch.Tensor,
    h_out: torch.Tensor,
    c_out: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step (torch's equations) for (N, B, …) states, written into the given
    buffers: ``gates`` the activated i, f, g, o; ``tanh_c``; the new h and c."""
    hidden = h.shape[-1]
    torch.baddbmm(x, h, w_t, out=gates)  # the input part already holds both biases
    gates[..., : 2 * hidden].sigmoid_()
    gates[..., 2 * hidden : 3 * hidden].tanh_()
    gates[..., 3 * hidden :].sigmoid_()
    i, f, g, o = gates.chunk(4, -1)
    torch.mul(f, c, out=c_out).addcmul_(i, g)
    torch.tanh(c_out, out=tanh_c)
    torch.mul(o, tanh_c, out=h_out)
    return h_out, c_out


def _lstm_step_back(
    gates: torch.Tensor,
    tanh_c: torch.Tensor,
    dh: torch.Tensor,
    dc: torch.Tensor,
    c_prev: torch.Tensor,
    d_gates: torch.Tensor,
) -> torch.Tensor:
    """One LSTM step back: the gradient of the gates' pre-activations into ``d_gates``
    (input and recurrent parts alike), and that of c_{t−1} returned."""
    i, f, g, o = gates.chunk(4, -1)
    d_i, d_f, d_g, d_o = d_gates.chunk(4, -1)
    dc = dc + dh * o * (1 - tanh_c * tanh_c)
    torch.mul(dh * tanh_c, o * (1 - o), out=d_o)
    torch.mul(dc * g, i * (1 - i), out=d_i)
    torch.mul(dc * c_prev, f * (1 - f), out=d_f)
    torch.mul(dc * i, 1 - g * g, out=d_g)
    return dc * f


def _gru_step(
    x: torch.Tensor,
    h: torch.Tensor,
    w_t: torch.Tensor,
    b: torch.Tensor,
    gates: torch.Tensor,
    r_n: torch.Tensor,
    h_out: torch.Tensor,
) -> torch.Tensor:
    """One GRU step (torch's: r, z, n; h' = (1 − z) ⊙ n + z ⊙ h) for (N, B, …) states,
    written into the buffers: ``gates`` the activated r, z, n; ``r_n`` the recurrent part
    of n (W_hn·h + b_hn); the new h."""
    hidden = h.shape[-1]
    recurrent = torch.baddbmm(b.unsqueeze(1), h, w_t)
    torch.add(x[..., : 2 * hidden], recurrent[..., : 2 * hidden], out=gates[..., : 2 * hidden])
    gates[..., : 2 * hidden].sigmoid_()
    reset, update, new = gates.chunk(3, -1)
    r_n.copy_(recurrent[..., 2 * hidden :])
    torch.addcmul(x[..., 2 * hidden :], reset, r_n, out=new).tanh_()
    torch.mul(1 - update, new, out=h_out).addcmul_(update, h)
    return h_out


def _gru_step_back(
    gates: torch.Tensor,
    r_n: torch.Tensor,
    dh: torch.Tensor,
    h_prev: torch.Tensor,
    d_x: torch.Tensor,
    d_r: torch.Tensor,
) -> torch.Tensor:
    """One GRU step back: the gradients of the input part into ``d_x``, of the recurrent
    part into ``d_r``, and that of h_{t−1} other than through the recurrent part returned."""
    reset, update, new = gates.chunk(3, -1)
    dx_r, dx_z, dx_n = d_x.chunk(3, -1)
    dr_r, dr_z, dr_n = d_r.chunk(3, -1)
    torch.mul(dh * (1 - update), 1 - new * new, out=dx_n)
    torch.mul(dx_n * r_n, reset * (1 - reset), out=dx_r)
    torch.mul(dh * (h_prev - new), update * (1 - update), out=dx_z)
    dr_r.copy_(dx_r)
    dr_z.copy_(dx_z)
    torch.mul(dx_n, reset, out=dr_n)
    return dh * update
