"""Personal layers (FedPer): a head each client keeps, over a body the federation shares."""

from dataclasses import replace

import numpy as np
import pytest

import fedstream
from fedstream import ConfigError
from fedstream.simulation.config import from_mapping, load_toml
from fedstream.simulation.engine import builtin_app
from tests.runs import (
    assert_secure_sum_matches_plain,
    resumed_and_straight,
    vectorised_and_sequential,
)
from tests.settings import make_config, nested

SKEWED = {"alpha": 0.1, "rounds": 10}


def test_a_personal_head_fits_each_clients_labels_better_than_one_global_model():
    # digits at Dirichlet 0.1: each client sees a few classes, and its own output layer
    # (entries 4.weight, 4.bias of the MLP) learns its own mix over the shared body
    fedavg = fedstream.simulate(**nested(**SKEWED))
    fedper = fedstream.simulate(**nested(personal=("4",), **SKEWED))
    assert fedavg.final_metrics["fed_accuracy"] == pytest.approx(0.660, abs=1e-3)
    assert "fed_personal_accuracy" not in fedavg.final_metrics
    assert fedper.final_metrics["fed_personal_accuracy"] == pytest.approx(0.808, abs=1e-3)
    # each client evaluates the server's model too: its body under the initial head
    assert fedper.final_metrics["fed_accuracy"] == pytest.approx(0.472, abs=1e-3)
    # per client: every one with test examples reports the global model, those that have
    # trained their own head that one too; one that has not uses the global model, which
    # the federated mean counts for it
    tested = [m for m in fedper.reports[-1].evaluations.values() if m]
    own = [m for m in tested if "personal_accuracy" in m]
    assert all("accuracy" in m for m in tested) and 50 < len(own) < len(tested)
    # the server's model keeps its initial head (as after one round); only the body moved
    one = fedstream.simulate(**nested(personal=("4",), rounds=1, evaluate_every=0))
    assert np.array_equal(fedper.state.params["4.weight"], one.state.params["4.weight"])
    assert not np.array_equal(fedper.state.params["0.weight"], one.state.params["0.weight"])


def test_personal_heads_are_kept_in_each_clients_state_and_resume_bit_for_bit(tmp_path):
    # the personal accuracy after a resume is the uninterrupted run's only if every
    # client's head came back from the checkpoint
    run = {"personal": ("4",), "rounds": 4, "clients_per_round": 10, "evaluate_every": 0}
    resumed, straight = resumed_and_straight(tmp_path, run)
    assert resumed.state.params.bit_equal(straight.state.params)
    assert (
        resumed.final_metrics["fed_personal_accuracy"]
        == straight.final_metrics["fed_personal_accuracy"]
    )


def test_a_personal_split_is_read_from_the_command_line_and_a_file(tmp_path):
    config = make_config(personal="2,4")
    assert config.model.personal == ("2", "4")
    path = tmp_path / "run.toml"
    path.write_text(config.to_toml())
    assert from_mapping(load_toml(path)).model.personal == ("2", "4")
    with pytest.raises(ConfigError, match=r"^model\.personal=3 is invalid: expected a list"):
        make_config(personal=3)


def test_an_apps_predicate_picks_the_same_personal_layers_as_their_module_name():
    # the split by a predicate on entry names (the app's ``personal``) is the split by
    # module name: the same run, bit for bit, for FedPer and for FedRep (which needs one)
    run = {"rounds": 2, "clients_per_round": 10, "evaluate_every": 0, "alpha": 0.1}
    for strategy in ("fedavg", "fedrep"):
        config = make_config(strategy=strategy, **run)
        app = replace(builtin_app(config)[0], personal=lambda name: name.startswith("4."))
        by_predicate = fedstream.simulate(config, app=app)
        by_name = fedstream.simulate(**nested(strategy=strategy, personal=("4",), **run))
        assert by_predicate.state.params.bit_equal(by_name.state.params)
        assert by_predicate.final_metrics == by_name.final_metrics
        assert "fed_personal_accuracy" in by_name.final_metrics


def test_a_split_that_names_nothing_or_everything_is_refused_before_round_one():
    with pytest.raises(ConfigError, match=r"^model\.personal='head' is invalid: expected a mod"):
        fedstream.simulate(**nested(personal=("head",), rounds=1))
    with pytest.raises(ConfigError, match=r"expected some of the model's layers, not all"):
        fedstream.simulate(**nested(personal=("0", "2", "4"), rounds=1))


def test_personal_layers_compose_with_secure_sums_and_the_vectorised_trainer():
    run = {"personal": ("4",), "rounds": 2, "evaluate_every": 0, "alpha": 0.1}
    assert_secure_sum_matches_plain(run)
    vectorized, sequential = vectorised_and_sequential(run)
    assert vectorized.final_metrics["fed_accuracy"] == pytest.approx(
        sequential.final_metrics["fed_accuracy"], abs=0.01
    )


@pytest.mark.slow  # worker processes
@pytest.mark.parametrize(
    "run",
    [
        {"strategy": "fedrep", "personal": ("4",)},
        {"strategy": "ditto"},
        {"personal": ("4",), "compression": "topk:0.2"},
    ],
    ids=["fedrep", "ditto", "fedper-topk"],
)
def test_personal_models_in_worker_processes_end_where_the_in_process_run_does(run):
    # each worker keeps its clients' heads or personal models; the run is bit for bit
    # the in-process one, personal metrics included
    settings = {**run, "rounds": 2, "clients_per_round": 10, "alpha": 0.1}
    alone = fedstream.simulate(**nested(**settings))
    workers = fedstream.simulate(**nested(executor="processes", workers=2, **settings))
    assert workers.state.params.bit_equal(alone.state.params)
    assert workers.final_metrics == alone.final_metrics
    assert "fed_personal_accuracy" in alone.final_metrics
