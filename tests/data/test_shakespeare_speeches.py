"""The Shakespeare speech tasks: verse or prose from the layout, the Folio's genres, roles
as clients, minor roles held out."""

import collections

import pytest

from fedstream.data.shakespeare import parse_dialogue, texts_dir
from fedstream.data.shakespeare_speeches import (
    FOLIO_GENRE,
    GENRES,
    REPLY_GAP,
    speech_corpus,
    verse_label,
)
from fedstream.errors import ConfigError

VERSE = "To be, or not to be,--that is the question:--\nWhether 'tis nobler in the mind\nTo suffer"
PROSE = "Marry, then, sweet wag, when thou art king\nare squires of the night's\nbody be called"


def test_verse_is_told_from_the_capitals_that_start_its_lines():
    assert verse_label(VERSE) == 1
    assert verse_label(PROSE) == 0
    assert verse_label("Two lines\nOnly") is None  # too short to tell
    # half the continuation lines capitalised: prose; more than half but not all: unknown
    assert verse_label("a\nB c\nd e") == 0
    assert verse_label("a\nB\nC\nd") is None
    assert verse_label("a\n'Tis quoted\n(And bracketed") == 1


def test_the_verse_task_has_the_counts_of_the_folio_plays():
    corpus = speech_corpus("verse")
    assert len(corpus.clients) == 128 and len(corpus.heldout) == 5139
    labels = collections.Counter(label for pairs in corpus.clients.values() for _, label in pairs)
    assert labels == {1: 4455, 0: 1092}
    falstaff = [label for _, label in corpus.clients["henry_iv_part_1/FAL"]]
    assert sum(falstaff) / len(falstaff) < 0.1  # Falstaff speaks prose
    hamlet = corpus.clients["hamlet/HAM"]
    assert len(hamlet) == 147
    # the printed lines, marked as verse is quoted; the capitals are the tokenizer's to drop
    assert hamlet[0][0].startswith("Seems, madam! Nay, it is; I know not seems. / 'Tis not alone")
    assert hamlet[0][0].count(" / ") == 10


def test_the_genre_task_has_the_counts_of_the_folio_plays():
    corpus = speech_corpus("genre", min_speeches=40)
    assert len(FOLIO_GENRE) == 37  # the 36 plays of the First Folio, and Pericles
    genres = collections.Counter(FOLIO_GENRE.values())
    assert genres == {"comedy": 15, "history": 10, "tragedy": 12}
    # roles with at least 40 speeches of at least 5 words
    assert len(corpus.clients) == 208 and len(corpus.heldout) == 9337
    assert sum(len(pairs) for pairs in corpus.clients.values()) == 16116
    hamlet = corpus.clients["hamlet/HAM"]
    assert {GENRES[label] for _, label in hamlet} == {"tragedy"} and len(hamlet) == 291
    assert hamlet[0][0] == "A little more than kin, and less than kind!"


def test_the_dialogue_keeps_the_order_speeches_are_spoken_in():
    dialogue = parse_dialogue((texts_dir() / "hamlet_gut.txt").read_text(encoding="latin-1"))
    assert len(dialogue) == 1066 and dialogue[0] == ("BER", "Who's there?")
    assert dialogue[66][1] == "A little more than kin, and less than kind!"
    assert dialogue[65][0] == "KING" and dialogue[65][1].startswith("Take thy fair hour, Laertes")


@pytest.mark.slow  # a whole run or a process, seconds
def test_the_reply_task_pairs_a_speech_with_its_cue_or_with_a_distant_one():
    corpus = speech_corpus("reply")
    assert len(corpus.clients) == 312 and len(corpus.heldout) == 6005
    labels = collections.Counter(label for pairs in corpus.clients.values() for _, label in pairs)
    assert labels == {1: 9726, 0: 9489}  # a fair coin per example
    dialogue = parse_dialogue((texts_dir() / "hamlet_gut.txt").read_text(encoding="latin-1"))
    places = collections.defaultdict(list)  # a speech's text → where it is spoken
    for k, (_, speech) in enumerate(dialogue):
        places[" ".join(speech.split())].append(k)
    for (cue, speech), label in corpus.clients["hamlet/HAM"]:
        gaps = {b - a for a in places[cue] for b in places[speech]}
        assert 1 in gaps if label == 1 else any(abs(g) >= REPLY_GAP for g in gaps)
    again = speech_corpus("reply", seed=1).clients["hamlet/HAM"]
    assert [label for _, label in again] != [label for _, label in corpus.clients["hamlet/HAM"]]


def test_roles_with_fewer_speeches_than_the_bar_are_held_out_whole():
    wide, narrow = speech_corpus(), speech_corpus(min_speeches=60)
    assert set(narrow.clients) < set(wide.clients) and len(narrow.clients) == 24
    moved = sum(len(wide.clients[c]) for c in set(wide.clients) - set(narrow.clients))
    assert len(narrow.heldout) == len(wide.heldout) + moved  # no speech lost or doubled
    assert all(len(text.split()) >= 5 for text, _ in narrow.heldout)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"task": "rhyme"},
            r"^task='rhyme' is invalid: expected one of \['genre', 'reply', 'verse'\]$",
        ),
        ({"min_words": 0}, r"^min_words=0 is invalid: expected a whole number >= 1$"),
        ({"min_speeches": 1}, r"^min_speeches=1 is invalid: expected a whole number >= 2"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        speech_corpus(**settings)
