import math

import numpy as np
import pytest

from fedstream import (
    ClientUpdate,
    ConfigError,
    FedAvg,
    InProcessTransport,
    Params,
    RoundConfig,
    RoundFailedError,
    TorchTrainer,
    run_round,
)
from fedstream.rounds import sample_clients
from fedstream.simulation import build
from tests.settings import make_config


class FaultyTrainer(TorchTrainer):
    """A real trainer whose chosen clients raise, or send a corrupted update."""

    def __init__(self, inner: TorchTrainer, faults: dict[str, str]) -> None:
        super().__init__(inner.module, inner.task)
        self.faults = faults

    def fit(self, params, task, data):
        fault = self.faults.get(task.client_id)
        if fault == "raise":
            raise RuntimeError(f"disk full on {task.client_id}")
        update = super().fit(params, task, data)
        if fault == "nan":
            return update.__class__(
                update.client_id,
                update.round,
                update.payload.map(lambda a: a * np.nan),
                update.weight,
            )
        if fault == "shape":
            payload = Params({n: np.zeros(3, a.dtype) for n, a in update.payload.items()})
            return ClientUpdate(update.client_id, update.round, payload, update.weight)
        if fault == "huge":
            return ClientUpdate(update.client_id, update.round, update.payload * 1e6, update.weight)
        if fault == "stale":
            return ClientUpdate(update.client_id, update.round - 1, update.payload, update.weight)
        return update


def setup(num_clients=8, faults=None):
    made = build(
        make_config(
            num_clients=num_clients, clients_per_round=2, partition="iid", trainer="sequential"
        )
    )
    trainer = made.trainer
    assert isinstance(trainer, TorchTrainer)
    transport = InProcessTransport(made.dataset.clients, FaultyTrainer(trainer, faults or {}))
    return made.initial, transport, sorted(made.dataset.clients)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "clients_per_round",
            0.0,
            r"clients_per_round=0.0 is invalid: expected a number in \(0, 1\]",
        ),
        ("clients_per_round", 1.5, r"clients_per_round=1.5 is invalid"),
        ("clients_per_round", 0, "clients_per_round=0 is invalid: expected an integer >= 1"),
        ("lr", -0.1, "lr=-0.1 is invalid: expected a finite number > 0"),
        ("lr", math.nan, "lr=nan is invalid"),
        ("batch_size", -1, "batch_size=-1 is invalid"),
        ("max_update_norm", 0.0, "max_update_norm=0.0 is invalid"),
    ],
)
def test_bad_round_config_names_field_and_value(field, value, message):
    with pytest.raises(ConfigError, match=message):
        RoundConfig(**{field: value})


def test_sampling_is_uniform_without_replacement_and_seeded():
    ids = [f"c{i}" for i in range(50)]
    first = sample_clients(np.random.default_rng(7), ids, 10)
    assert len(set(first)) == 10
    assert first == sample_clients(np.random.default_rng(7), ids, 10)
    counts = dict.fromkeys(ids, 0)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        for c in sample_clients(rng, ids, 10):
            counts[c] += 1
    # each client is expected 400 times; 5 standard deviations is about ±90
    assert max(abs(v - 400) for v in counts.values()) < 90


def test_round_reports_clients_bytes_and_metrics():
    state, transport, ids = setup()
    config = RoundConfig(clients_per_round=4, local_epochs=1, lr=0.1)
    new, report = run_round(state, FedAvg(), transport, ids, config)
    assert new.round == 1 and state.round == 0
    assert len(report.sampled) == 4 and sorted(report.completed) == sorted(report.sampled)
    assert report.failures == ()
    wire = state.params.wire_size()
    # broadcast to the 4 trained and to all 8 evaluating clients; one payload back from each
    assert report.bytes_down == wire * (4 + 8)
    assert report.bytes_up == 4 * wire
    assert {"train_loss", "fed_loss", "fed_accuracy"} <= set(report.metrics)
    assert not new.params.bit_equal(state.params)


def test_failing_client_is_recorded_and_round_goes_on():
    state, transport, ids = setup(faults={"client-2": "raise"})
    config = RoundConfig(clients_per_round=8, min_clients=5, evaluate_fraction=0.0)
    _, report = run_round(state, FedAvg(), transport, ids, config)
    assert len(report.completed) == 7
    (failure,) = report.failures
    assert failure.client_id == "client-2" and failure.stage == "train"
    assert "RuntimeError: disk full on client-2" in failure.cause


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("nan", "NaN or Inf"),
        ("shape", "has shape (3,), expected"),
        ("huge", "exceeds max_update_norm=10"),
        ("stale", "update is for round 0, expected round 1"),
    ],
)
def test_bad_updates_are_rejected_and_recorded(fault, reason):
    state, transport, ids = setup(faults={"client-5": fault})
    config = RoundConfig(clients_per_round=8, evaluate_fraction=0.0, max_update_norm=10.0)
    new, report = run_round(state, FedAvg(), transport, ids, config)
    assert "client-5" not in report.completed and len(report.completed) == 7
    (failure,) = report.failures
    assert failure.stage == "validate" and reason in failure.cause
    assert new.params.is_finite()


def test_too_few_answers_stops_the_round_naming_each_client():
    faults = {f"client-{i}": "raise" for i in range(6)}
    state, transport, ids = setup(faults=faults)
    config = RoundConfig(clients_per_round=8, min_clients=3, evaluate_fraction=0.0)
    with pytest.raises(RoundFailedError) as caught:
        run_round(state, FedAvg(), transport, ids, config)
    message = str(caught.value)
    assert "2 of 8 sampled clients gave a valid update, min_clients=3" in message
    for i in range(6):
        assert f"client 'client-{i}' (train): RuntimeError: disk full on client-{i}" in message
    assert state.round == 0  # the caller's state is still the valid one


def test_same_state_gives_the_same_round():
    state, transport, ids = setup()
    config = RoundConfig(clients_per_round=3, evaluate_fraction=0.0)
    a, report_a = run_round(state, FedAvg(), transport, ids, config)
    b, report_b = run_round(state, FedAvg(), transport, ids, config)
    assert report_a.sampled == report_b.sampled
    assert a.params.bit_equal(b.params)
    assert a.rng_state == b.rng_state != state.rng_state


def test_the_chunked_sum_rounds_exactly_as_the_plain_expression():
    from fedstream.secure.plain import CHUNK, add_scaled

    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        values = rng.standard_normal((3, CHUNK + 17)).astype(dtype)  # more than one chunk
        expected, chunked = np.zeros(values.shape), np.zeros(values.shape)
        for weight in (1 / 3, 17.25, 1e-7):
            expected += weight * values
            add_scaled(chunked, values, weight)
        assert np.array_equal(expected, chunked)
    with pytest.raises(ValueError, match="C-contiguous"):
        add_scaled(np.zeros((2, CHUNK + 1))[:, ::2], values[:2, : (CHUNK + 2) // 2], 1.0)
