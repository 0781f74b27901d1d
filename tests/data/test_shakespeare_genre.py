"""The Shakespeare genre task: the Folio's genres, roles as clients, minor roles held out."""

import collections

import pytest

from fedstream.data.shakespeare_genre import FOLIO_GENRE, GENRES, genre_corpus
from fedstream.errors import ConfigError


def test_the_corpus_has_the_counts_of_the_folio_plays():
    corpus = genre_corpus()
    assert len(FOLIO_GENRE) == 37  # the 36 plays of the First Folio, and Pericles
    assert collections.Counter(FOLIO_GENRE.values()) == {"comedy": 15, "history": 10, "tragedy": 12}
    # roles with at least 40 speeches of at least 5 words, by genre (comedy, history, tragedy)
    assert len(corpus.clients) == 208
    assert collections.Counter(label for _, label in corpus.clients.values()) == {
        0: 102,
        2: 65,
        1: 41,
    }
    assert sum(len(s) for s, _ in corpus.clients.values()) == 16116 and len(corpus.heldout) == 9337
    speeches, label = corpus.clients["hamlet/HAM"]
    assert GENRES[label] == "tragedy" and len(speeches) == 291
    assert speeches[0] == "A little more than kin, and less than kind!"
    assert GENRES[corpus.clients["henry_v/KING HENRY"][1]] == "history"


def test_roles_with_fewer_speeches_than_the_bar_are_held_out_whole():
    wide, narrow = genre_corpus(), genre_corpus(min_speeches=100)
    assert set(narrow.clients) < set(wide.clients) and len(narrow.clients) == 46
    moved = sum(len(wide.clients[c][0]) for c in set(wide.clients) - set(narrow.clients))
    assert len(narrow.heldout) == len(wide.heldout) + moved  # no speech lost or doubled
    assert all(len(text.split()) >= 5 for text, _ in narrow.heldout)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_words": 0}, r"^min_words=0 is invalid: expected a whole number >= 1$"),
        ({"min_speeches": 1}, r"^min_speeches=1 is invalid: expected a whole number >= 2"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        genre_corpus(**settings)
