"""Client-level DP with personalisation: what a client keeps (Ditto's personal model,
FedBN's batch norm) is outside what the curious server receives, so the guarantee DP-FedAvg
gives for the shared model is the whole story of what leaves the client."""

import numpy as np
import pytest

import fedstream
from fedstream import run_round
from fedstream.client.algorithms import PERSONAL_MODEL
from fedstream.client.local import LOCAL
from fedstream.simulation import build
from fedstream.simulation.engine import round_config
from tests.secure.test_secagg import RecordingTransport
from tests.settings import make_config, nested

CLIP = 0.05
DP_RUN = {
    "num_clients": 8,
    "clients_per_round": 4,
    "local_epochs": 1,
    "trainer": "sequential",
    "dp": "client",
    "dp_noise": 0.5,
    "dp_clip": CLIP,
    "dp_secure_noise": False,  # seeded server noise, so two runs can be compared
    "alpha": 0.5,
    "sampling": "fixed",  # four clients a round, not Poisson sampling's random count
}


def served_rounds(rounds: int, **changes):
    """``rounds`` rounds through the real round loop, with everything the server receives
    recorded (as a curious server would keep it), and the clients' states after."""
    config = make_config(**(DP_RUN | changes))
    setup = build(config)
    transport = RecordingTransport(setup.dataset.clients, setup.trainer)
    strategy, settings = config.build_strategy(), round_config(config, setup)
    state, ids = setup.initial, sorted(setup.dataset.clients)
    for _ in range(rounds):
        state, report = run_round(state, strategy, transport, ids, settings)
        assert len(report.completed) == 4
    received = [result for stage, _, result in transport.received if stage == "fit"]
    return setup.initial, state, received, transport.client_states()


def test_dittos_personal_models_add_nothing_to_what_the_server_receives_under_client_dp():
    # the server receives from Ditto's clients exactly what DP-FedAvg's send, update for
    # update over three rounds, although by round 2 each has a personal model trained on
    # its data: DP-FedAvg's guarantee covers all that leaves a Ditto client
    _, ditto, ditto_seen, ditto_clients = served_rounds(3, strategy="ditto")
    _, fedavg, fedavg_seen, _ = served_rounds(3)
    assert len(ditto_seen) == len(fedavg_seen) == 12
    for mine, theirs in zip(ditto_seen, fedavg_seen, strict=True):
        assert mine.payload.bit_equal(theirs.payload) and mine.weight == theirs.weight
        assert mine.payload.norm() <= CLIP * (1 + 1e-5)  # each one clipped
    assert ditto.params.bit_equal(fedavg.params)
    personal = [s[PERSONAL_MODEL] for s in ditto_clients.values() if PERSONAL_MODEL in s]
    assert len(personal) >= 4
    assert all(not p.bit_equal(ditto.params) for p in personal)  # they are really their own


def test_fedbn_sends_only_clipped_shared_entries_and_its_batch_norm_never_moves_the_server():
    initial, state, seen, clients = served_rounds(2, model="mlp_bn", local_batchnorm=True)
    batch_norm = {n for n in initial.params if n.startswith("1.") or n.startswith("4.")}
    assert batch_norm and "1.running_mean" in batch_norm  # the model's two BatchNorm layers
    for update in seen:
        assert set(update.payload) == set(initial.params) - batch_norm
        assert update.payload.norm() <= CLIP * (1 + 1e-5)
    for name in batch_norm:  # the server's copy keeps its initial values
        assert np.array_equal(state.params[name], initial.params[name])
    own = [s[LOCAL] for s in clients.values() if LOCAL in s]
    assert own and all(batch_norm <= set(o) for o in own)
    moved = [
        o for o in own if not np.array_equal(o["1.running_mean"], initial.params["1.running_mean"])
    ]
    assert moved  # each client's statistics are its own, and stayed with it


@pytest.mark.parametrize(
    "changes",
    [
        {"strategy": "ditto"},
        {"model": "mlp_bn", "local_batchnorm": True},
        {"personal": ("4",)},
        {"strategy": "fedrep", "personal": ("4",)},
    ],
    ids=["ditto", "fedbn", "fedper", "fedrep"],
)
def test_personal_runs_under_client_dp_report_their_epsilon_and_both_accuracies(changes):
    # by default a private run keeps the clients' own metrics at home, personal accuracy
    # among them; a run that asks for them (outside epsilon) gets global and personal
    run = DP_RUN | {"rounds": 2} | changes
    private = fedstream.simulate(**nested(**run))
    reported = fedstream.simulate(**nested(**run | {"client_metrics": True}))
    plain = fedstream.simulate(**nested(**run | {"dp": "none"}))
    assert private.final_metrics["dp_epsilon"] > 0
    assert reported.final_metrics["dp_epsilon"] == private.final_metrics["dp_epsilon"]
    assert "dp_epsilon" not in plain.final_metrics
    assert not any(name.startswith("fed_") for name in private.final_metrics)
    for result in (reported, plain):
        assert {"fed_accuracy", "fed_personal_accuracy"} <= set(result.final_metrics)
    assert not reported.state.params.bit_equal(plain.state.params)
