"""The transformer wrappers and the pretrained all-MiniLM-L6-v2 weights from its package."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from fedstream.data.shakespeare import texts_dir
from fedstream.errors import ConfigError
from fedstream.llm import check_ids, minilm_path, pretrained_classifier, shakespeare
from fedstream.llm.shakespeare import speech_app
from tests.apps import tiny_lora


def test_the_packaged_minilm_weights_are_the_pretrained_ones():
    """Real weights, not a fresh initialisation: the encoder places a paraphrase nearer
    its sentence than an unrelated one (mean pooling, as sentence-transformers does)."""
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    encoder = pretrained_classifier(path, 3).model.bert
    sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The stock market fell sharply today.",
    ]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    similar, unrelated = float(pooled[0] @ pooled[1]), float(pooled[0] @ pooled[2])
    assert similar > 0.6 and unrelated < 0.2
    assert sum(p.numel() for p in encoder.parameters()) == 22_713_216


def test_token_ids_are_checked_before_the_model_sees_them():
    ids = torch.tensor([[1, 2, 3]])
    assert check_ids(ids.double(), 10, 8).dtype == torch.int64
    with pytest.raises(ValueError, match=r"^input ids range over \[1, 10\], expected \[0, 10\)$"):
        check_ids(torch.tensor([[1, 10]]), 10, 8)
    with pytest.raises(ValueError, match=r"^input ids must be whole numbers"):
        check_ids(torch.tensor([[0.5]]), 10, 8)
    with pytest.raises(ValueError, match=r"^rows have 3 tokens, at most 2$"):
        check_ids(ids, 10, 2)
    with pytest.raises(
        ValueError, match=r"^input ids have shape \(3,\), expected \(rows, tokens\)$"
    ):
        check_ids(ids[0], 10, 8)


@pytest.mark.slow  # a whole run or a process, seconds
def test_the_speech_app_tokenises_speeches_to_fixed_rows_and_holds_out_minor_roles():
    app = speech_app(model=tiny_lora.tiny_bert, clients=5, heldout=50, max_tokens=12)
    assert len(app.ids()) == 5
    hamlet = app.client_data("hamlet/HAM")
    assert hamlet.x_train.shape == (118, 12) and hamlet.x_test.shape == (29, 12)
    assert set(hamlet.y_train.tolist()) == {0, 1}  # Hamlet speaks verse and prose
    x, y = app.heldout_split()
    assert x.shape == (50, 12) and set(y.tolist()) <= {0, 1}
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    assert tokenizer.decode(hamlet.x_train[0], skip_special_tokens=True) == (
        "seems, madam! nay, it is ; i"  # 12 ids with [CLS] and [SEP]
    )


@pytest.mark.slow  # tokenises the corpus, seconds
def test_a_play_as_the_client_holds_its_roles_splits_and_the_minor_roles_stay_held_out():
    by_role = speech_app(model=tiny_lora.tiny_bert, heldout=50, max_tokens=12)
    by_play = speech_app(model=tiny_lora.tiny_bert, heldout=50, max_tokens=12, unit="play")
    plays = sorted({role.split("/")[0] for role in by_role.ids()})
    assert by_play.ids() == plays and len(plays) == 36
    hamlet = by_play.client_data("hamlet")
    roles = [by_role.client_data(r) for r in by_role.ids() if r.startswith("hamlet/")]
    assert len(roles) == 4  # Hamlet, the King, Laertes and Polonius speak 25 times or more
    for part in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(
            getattr(hamlet, part), np.concatenate([getattr(r, part) for r in roles])
        )
    for mine, theirs in zip(by_play.heldout_split(), by_role.heldout_split(), strict=True):
        np.testing.assert_array_equal(mine, theirs)  # the same unseen speakers
    largest = speech_app(
        model=tiny_lora.tiny_bert, heldout=50, max_tokens=12, unit="play", clients=2
    )
    assert largest.ids() == ["coriolanus", "othello"]  # 252 and 239 training speeches
    with pytest.raises(ConfigError, match=r"unit.*'scene'.*one of \['role', 'play'\]"):
        speech_app(model=tiny_lora.tiny_bert, unit="scene")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"clients.*40.*at most 36 plays"):
        speech_app(model=tiny_lora.tiny_bert, max_tokens=12, unit="play", clients=40)


@pytest.mark.slow  # tokenises the corpus, seconds
def test_the_tokenised_corpus_is_made_once_per_machine_and_read_back_the_same(
    tmp_path, monkeypatch
):
    texts = str(texts_dir())  # the texts stay where they are; the new cache holds rows
    monkeypatch.setenv("FEDSTREAM_CACHE", str(tmp_path))
    made = shakespeare._tokenised("verse", str(minilm_path()), 12, 25, texts)
    stored = list((tmp_path / "speeches").iterdir())
    assert len(stored) == 1 and stored[0].name.startswith("verse-12-")
    shakespeare._tokenised.cache_clear()  # as a new process would start

    def tokenise_again(*_: object) -> None:
        raise AssertionError("the corpus was tokenised a second time")

    monkeypatch.setattr(shakespeare, "_tokenise", tokenise_again)
    read = shakespeare._tokenised("verse", str(minilm_path()), 12, 25, texts)
    assert sorted(read[0]) == sorted(made[0]) and len(read[0]) == 128
    for role, (x, y) in made[0].items():
        np.testing.assert_array_equal(read[0][role][0], x)
        np.testing.assert_array_equal(read[0][role][1], y)
    for mine, theirs in zip(read[1], made[1], strict=True):
        np.testing.assert_array_equal(mine, theirs)
    shakespeare._tokenised.cache_clear()
