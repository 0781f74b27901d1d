"""Ditto: the global model is FedAvg's bit for bit, each client's personal model is kept
and evaluated on the client, and what it cannot run with is refused."""

import pytest

import fedstream
from fedstream import ConfigError
from fedstream.strategies import Ditto
from tests.runs import resumed_and_straight
from tests.settings import make_config, nested

TWO_CLASSES = {"partition": "shards", "rounds": 10}


def test_the_global_model_is_fedavgs_and_personal_models_fit_their_clients():
    # two classes per client: one global model reaches 0.67 on the clients' own test
    # splits, the personal models (λ = 0.1) 0.86 (a client not yet sampled, with no
    # personal model, counts with the global one)
    fedavg = fedstream.simulate(**nested(**TWO_CLASSES))
    ditto = fedstream.simulate(**nested({"strategy": {"name": "ditto"}}, **TWO_CLASSES))
    assert ditto.state.params.bit_equal(fedavg.state.params)
    assert ditto.final_metrics["fed_accuracy"] == fedavg.final_metrics["fed_accuracy"]
    assert fedavg.final_metrics["fed_accuracy"] == pytest.approx(0.6695, abs=1e-4)
    assert ditto.final_metrics["fed_personal_accuracy"] == pytest.approx(0.8602, abs=1e-4)
    assert "fed_personal_accuracy" not in fedavg.final_metrics


def test_a_larger_lambda_pulls_the_personal_models_towards_the_global_one():
    def personal(lam):
        run = nested({"strategy": {"name": "ditto", "personal_lambda": lam}}, **TWO_CLASSES)
        return fedstream.simulate(**run).final_metrics["fed_personal_accuracy"]

    # at λ = 100 each personal step is dominated by the pull: the personal model sits
    # near the global one and fits its client little better
    assert personal(100.0) < personal(0.1) - 0.1


def test_personal_models_are_in_every_clients_state_and_resume_bit_for_bit(tmp_path):
    run = {"strategy": "ditto", "rounds": 4, "clients_per_round": 10, "evaluate_every": 0}
    resumed, straight = resumed_and_straight(tmp_path, run)
    assert resumed.state.params.bit_equal(straight.state.params)
    assert (
        resumed.final_metrics["fed_personal_accuracy"]
        == straight.final_metrics["fed_personal_accuracy"]
    )


def test_ditto_refuses_what_it_cannot_run_with_and_says_why():
    with pytest.raises(
        ConfigError, match=r"^run\.personalize_epochs=1 is invalid: expected 0 with Ditto \(its"
    ):
        make_config(strategy="ditto", personalize_epochs=1)
    with pytest.raises(ConfigError, match=r"privacy\.level='sample' is invalid: .* with Ditto"):
        make_config(strategy="ditto", dp="sample")
    with pytest.raises(ConfigError, match=r"^personal_lambda=-1 is invalid"):
        Ditto(personal_lambda=-1)
