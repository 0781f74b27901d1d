"""Federated fine-tuning of Hugging Face ``transformers`` models, with LoRA through ``peft``
(docs/llm.md). Needs the ``llm`` extra: ``pip install "fedstream[llm]"``."""

from fedstream.llm.lora import LoraSettings, adapter_gap, head_only, with_lora
from fedstream.llm.models import (
    NextToken,
    TextClassifier,
    TransformerModel,
    check_ids,
    minilm_path,
    pretrained_classifier,
)

__all__ = [
    "LoraSettings",
    "NextToken",
    "TextClassifier",
    "TransformerModel",
    "adapter_gap",
    "check_ids",
    "head_only",
    "minilm_path",
    "pretrained_classifier",
    "with_lora",
]
