import numpy as np
import pytest

from fedstream import EvaluateResult, RoundConfig
from fedstream.rounds import evaluate_model, sample_clients
from fedstream.transport import ScriptedTransport
from tests.rounds.scripted import CLIENTS, GLOBAL, honest


def test_a_fraction_of_clients_evaluate_and_metrics_are_example_weighted():
    def evaluate(params, client_id, round_number):
        k = int(client_id[1:])
        if k == 5:
            raise ValueError("no test data")
        return EvaluateResult(client_id, round_number, k + 1, {"accuracy": k / 10})

    rng = np.random.default_rng(4)
    evaluation = evaluate_model(
        GLOBAL,
        ScriptedTransport(honest, evaluate),
        CLIENTS,
        RoundConfig(evaluate_fraction=0.5),
        2,
        rng,
        central_evaluate=lambda params: {"loss": float(params["b"][0])},
    )
    asked = sample_clients(np.random.default_rng(4), CLIENTS, 3)
    answered = [c for c in asked if c != "c5"]
    assert sorted(evaluation.per_client) == sorted(answered)
    weights = [int(c[1:]) + 1 for c in answered]
    expected = sum(w * (w - 1) / 10 for w in weights) / sum(weights)
    assert evaluation.metrics["fed_accuracy"] == pytest.approx(expected)
    assert evaluation.metrics["central_loss"] == 0.5
    assert [f.client_id for f in evaluation.failures] == (["c5"] if "c5" in asked else [])
    assert evaluation.bytes_down == 3 * GLOBAL.wire_size()


def test_no_federated_evaluation_at_fraction_zero():
    evaluation = evaluate_model(
        GLOBAL,
        ScriptedTransport(honest),
        CLIENTS,
        RoundConfig(evaluate_fraction=0.0),
        1,
        np.random.default_rng(0),
        None,
    )
    assert evaluation.metrics == {} and evaluation.bytes_down == 0
