"""Small transformer apps for tests: a randomly initialised 2-layer BERT (hidden size 32)
on the Shakespeare verse-or-prose task, tokenised by all-MiniLM-L6-v2's real tokenizer, trained
with LoRA, FFA-LoRA or in full; and a tiny Llama for next-character prediction."""

from __future__ import annotations

import functools

import numpy as np
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

import fedstream
from fedstream.data.shakespeare import load_roles, role_examples
from fedstream.llm import LoraSettings, NextToken, TextClassifier, with_lora
from fedstream.llm.shakespeare import speech_app

VOCAB = 30522  # all-MiniLM-L6-v2's WordPiece vocabulary


def tiny_bert() -> TextClassifier:
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=2,
    )  # fmt: skip
    return TextClassifier(BertForSequenceClassification(config))


speeches = functools.partial(speech_app, model=tiny_bert, clients=8, heldout=100, max_tokens=16)
app = speeches(tuning="lora")
ffa = speeches(tuning="ffa")
full = speeches(tuning="full")
head = speeches(tuning="head")


def tiny_llama_lora() -> NextToken:
    """A 2-layer Llama over LEAF's 80 characters, LoRA on its query and value projections."""
    config = LlamaConfig(
        vocab_size=80, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    settings = LoraSettings(rank=4, alpha=8, target_modules=("q_proj", "v_proj"))
    return with_lora(NextToken(LlamaForCausalLM(config)), settings)  # type: ignore[return-value]


def characters(roles: int = 4, windows: int = 200) -> dict[str, object]:
    """Next-character data of the ``roles`` largest Shakespeare roles: 16-character windows
    (LEAF's vocabulary) and the character after each, split in order."""
    texts = load_roles()
    largest = sorted(texts, key=lambda r: (-len(texts[r]), r))[:roles]
    data: dict[str, object] = {}
    for role in largest:
        x, y = role_examples(texts[role][: windows + 80])
        x, y = np.ascontiguousarray(x[:windows, -16:]).astype(np.int64), y[:windows]
        cut = windows * 4 // 5
        data[role] = ((x[:cut], y[:cut]), (x[cut:], y[cut:]))
    return data


llama = fedstream.App(model=tiny_llama_lora, data=characters(), name="tiny-llama-lora")
