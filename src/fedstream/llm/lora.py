"""LoRA adapters (through ``peft``) and which of a model's parameters train.

A pretrained model stays frozen; clients train small low-rank adapters ``B·A`` beside
chosen weight matrices (``W + (alpha/rank)·B·A``), plus a task head where there is one.
fedstream federates exactly the parameters that train (``requires_grad``), so the frozen
base is never sent: every process loads it itself (docs/architecture.md, Frozen
parameters).

Averaging LoRA factors is not averaging adapters: the server's ``mean(B)·mean(A)`` is not
``mean(B·A)``, the average of what the clients learnt. Two methods:

- ``"average"``: train A and B and average each (what most frameworks do; inexact);
- ``"ffa"``: FFA-LoRA (Sun et al. 2024, "Improving LoRA in Privacy-preserving Federated
  Learning"): A stays at its initial value, the same on every client (drawn from the
  run's seed), and only B trains, so ``mean(B)·A = mean(B·A)`` exactly. It also halves the
  adapter's bytes, and under DP the noise lands on half as many numbers.

``head_only`` freezes everything but the head (the cheapest baseline), and
``adapter_gap`` measures how far factor averaging is from the exact average.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch import nn

from fedstream.errors import ConfigError
from fedstream.llm.models import TransformerModel
from fedstream.params import Params

Method = Literal["average", "ffa"]
METHODS: tuple[Method, ...] = ("average", "ffa")
HEADS = ("classifier", "score", "lm_head")
"""Module names of a task head in ``transformers`` models (BERT, Llama/GPT-2 classifiers,
causal LMs): trained and federated beside the adapters, unless ``head`` says otherwise."""


@dataclass(frozen=True)
class LoraSettings:
    """A LoRA configuration: ``rank`` r of each adapter, ``alpha`` (the adapter is scaled
    by alpha/r), ``dropout`` on its input, ``target_modules`` (module names, e.g. BERT's
    ``query`` and ``value``, Llama's ``q_proj`` and ``v_proj``), ``method`` (module
    docstring), and ``head``: the names of modules trained in full beside the adapters
    (by default the model's classification head, if it has one)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: Sequence[str] = ("query", "value")
    method: Method = "average"
    head: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError("lora.rank", self.rank, "a whole number >= 1")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int) or self.alpha < 1:
            raise ConfigError("lora.alpha", self.alpha, "a whole number >= 1")
        if not 0 <= self.dropout < 1:
            raise ConfigError("lora.dropout", self.dropout, "a probability in [0, 1)")
        if self.method not in METHODS:
            close = difflib.get_close_matches(str(self.method), METHODS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError("lora.method", self.method, f"one of {list(METHODS)}{hint}")
        if isinstance(self.target_modules, str) or not self.target_modules:
            raise ConfigError("lora.target_modules", self.target_modules, "a list of module names")


def _module_names(model: nn.Module) -> set[str]:
    """The last part of every module's dotted name (``query``, ``classifier``, …)."""
    return {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}


def _heads(model: nn.Module, head: Sequence[str] | None, setting: str) -> list[str]:
    """The head modules to train in full: ``head`` if given (each must be a module of
    ``model``; the error names ``setting``), else whichever of ``HEADS`` the model has."""
    names = _module_names(model)
    if head is None:
        return [h for h in HEADS if h in names]
    if isinstance(head, str) or any(h not in names for h in head):
        raise ConfigError(
            setting, head, f"a list of module names of this model, e.g. {list(HEADS)}"
        )
    return list(head)


def with_lora(wrapped: TransformerModel, settings: LoraSettings) -> TransformerModel:
    """``wrapped`` with LoRA adapters on its ``transformers`` model (in place, returned):
    every base parameter frozen, adapters on ``settings.target_modules``, the head trained
    in full, and, for FFA-LoRA, every ``lora_A`` frozen. The adapters' initial values
    come from torch's generator (``App.build_model`` seeds it), so every process starts
    from the same A and B."""
    from peft import LoraConfig, get_peft_model

    model = wrapped.model
    missing = [t for t in settings.target_modules if t not in _module_names(model)]
    if missing:
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        )
        raise ConfigError(
            "lora.target_modules", missing, f"names of linear modules of this model: {linear}"
        )
    head = _heads(model, settings.head, "lora.head")
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        modules_to_save=head or None,
    )
    wrapped.model = get_peft_model(model, config)
    if settings.method == "ffa":
        for name, parameter in wrapped.model.named_parameters():
            if ".lora_A." in name:
                parameter.requires_grad_(False)
    return wrapped


def head_only(wrapped: TransformerModel, head: Sequence[str] | None = None) -> TransformerModel:
    """``wrapped`` with every parameter frozen but its head's (``head`` module names, by
    default the model's classification head): the cheapest fine-tuning there is."""
    model = wrapped.model
    chosen = _heads(model, head, "head")
    if not chosen:
        raise ConfigError("head", head, f"the name of this model's head module, e.g. {list(HEADS)}")
    for name, parameter in model.named_parameters():
        parts = name.split(".")
        parameter.requires_grad_(any(h in parts for h in chosen))
    return wrapped


def adapter_pairs(params: Params) -> dict[str, tuple[str, str]]:
    """Each adapted module's name → the names of its (A, B) entries in ``params``."""
    pairs: dict[str, tuple[str, str]] = {}
    for name in params:
        if ".lora_A." in name:
            partner = name.replace(".lora_A.", ".lora_B.")
            if partner in params:
                pairs[name.split(".lora_A.")[0]] = (name, partner)
    return pairs


def adapter_gap(client_params: Sequence[Params], weights: Sequence[float]) -> float:
    """How far factor averaging is from the exact average of the clients' adapters:
    ‖mean(B)·mean(A) − mean(B·A)‖_F / ‖mean(B·A)‖_F over every adapted module (means
    weighted by ``weights``). Each of ``client_params`` holds one client's A and B (with
    FFA-LoRA, the common frozen A beside its own B: the gap is then 0 up to rounding)."""
    share = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    gap = norm = 0.0
    for a_name, b_name in adapter_pairs(client_params[0]).values():
        a_of = [np.asarray(p[a_name], np.float64) for p in client_params]
        b_of = [np.asarray(p[b_name], np.float64) for p in client_params]
        exact = np.zeros((b_of[0].shape[0], a_of[0].shape[1]))
        mean_a, mean_b = np.zeros_like(a_of[0]), np.zeros_like(b_of[0])
        for w, a, b in zip(share, a_of, b_of, strict=True):
            exact += w * (b @ a)
            mean_a += w * a
            mean_b += w * b
        gap += float(np.sum((mean_b @ mean_a - exact) ** 2))
        norm += float(np.sum(np.square(exact)))
    return (gap / norm) ** 0.5 if norm > 0 else 0.0
