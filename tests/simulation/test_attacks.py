"""Simulated attackers: who attacks, what each attack sends (pinned by hand), collusion
on the round's honest updates, what they do to a plain mean against a robust rule, and
the settings they cannot be combined with."""

from dataclasses import replace

import numpy as np
import pytest

import fedstream
from fedstream import ConfigError, FedAvg, Params, RoundConfig, ServerState, run_round
from fedstream.data.base import ClientData
from fedstream.simulation.attacks import (
    Attacks,
    PoisonedClients,
    add_trigger,
    alie_z,
    attacked_payload,
    choose_attackers,
    poison,
)
from tests.rounds.scripted import CLIENTS, GLOBAL, transport
from tests.settings import make_config


def test_attackers_are_a_seeded_share_of_the_clients():
    clients = [f"client-{k:02d}" for k in range(40)]
    chosen = choose_attackers(clients, 0.2, seed=3)
    assert len(chosen) == 8 and list(chosen) == sorted(chosen) and set(chosen) <= set(clients)
    assert choose_attackers(clients, 0.2, seed=3) == chosen
    assert choose_attackers(clients, 0.2, seed=4) != chosen
    assert choose_attackers(clients, 0.0, seed=3) == ()


def test_alie_z_follows_baruch_et_al():
    # n = 20, f = 4: s = ⌊11⌋ − 4 = 7, so z = Φ⁻¹(13/20) = 0.38532
    assert alie_z(20, 4) == pytest.approx(0.385320466, abs=1e-8)


OWN = Params({"w": np.array([1.0, 2.0])})
HONEST = [Params({"w": np.array([1.0, 1.0])}), Params({"w": np.array([3.0, 5.0])})]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("sign_flip", [-2.0, -4.0]),  # −scale × own, scale 2
        ("scale", [2.0, 4.0]),
        ("alie", [1.5, 2.0]),  # mean [2, 3] − z·std [1, 2], z = 0.5
        ("ipm", [-1.0, -1.5]),  # −ε × mean, ε = 0.5
    ],
)
def test_each_attack_by_hand(kind, expected):
    sent = attacked_payload(kind, OWN, HONEST, 2.0, 1.0, 0.5, 0.5, np.random.default_rng(0))
    assert sent["w"].tolist() == expected


def test_gaussian_noise_replaces_the_update():
    own = Params({"w": np.zeros(20_000, np.float32)})
    sent = attacked_payload("gaussian", own, [], 1.0, 3.0, 0.0, 0.5, np.random.default_rng(0))
    assert sent["w"].dtype == np.float32 and np.std(sent["w"]) == pytest.approx(3.0, rel=0.02)


def test_colluding_attackers_see_the_rounds_honest_updates_and_answer_last():
    # c0…c4 honestly send 1…5 in every entry; c5 (weight 6) sends −0.5 × their mean 3
    attacked = Attacks(transport(), ["c5"], "ipm", 1.0, 1.0, 0.0, 0.5, seed=0)
    state = ServerState.initial(GLOBAL, seed=0)
    config = RoundConfig(clients_per_round=6, evaluate_fraction=0.0)
    after, report = run_round(state, FedAvg(), attacked, CLIENTS, config)
    # Σ w·v = 1 + 4 + 9 + 16 + 25 + 6·(−1.5) = 46 over Σ w = 21
    np.testing.assert_allclose(after.params["b"], GLOBAL["b"] + 46 / 21, rtol=1e-6)
    assert "c5" in report.completed and not report.failures


SMALL = {"data": {"num_clients": 20}, "run": {"rounds": 6, "clients_per_round": 10}}


def test_sign_flipping_attackers_break_the_mean_and_not_the_median():
    attack = {"kind": "sign_flip", "fraction": 0.2}
    robust = fedstream.simulate(strategy={"aggregator": "median"}, attack=attack, **SMALL)
    assert robust.final_metrics["central_accuracy"] > 0.7
    assert robust.config.label == "fedavg + median vs sign_flip (20%)"
    try:
        plain = fedstream.simulate(attack=attack, **SMALL).final_metrics["central_accuracy"]
    except fedstream.RoundFailedError:  # the model diverged until no update was finite
        plain = 0.0
    assert plain < 0.3


def test_attacks_refuse_a_codec_and_a_secure_sum_naming_why():
    with pytest.raises(
        ConfigError,
        match=r"^compression\.codec='q8' is invalid: expected 'none' with attack\.kind='alie'",
    ):
        make_config(kind="alie", codec="q8")
    with pytest.raises(
        ConfigError, match=r"^secure\.scheme='secagg\+' is invalid: expected 'none' with"
    ):
        make_config(kind="ipm", secure_aggregation="secagg+")
    with pytest.raises(ConfigError, match=r"^attack\.kind='poison' is invalid: expected one of"):
        make_config(kind="poison")
    with pytest.raises(ConfigError, match=r"^attack\.fraction=1\.0 is invalid"):
        make_config(kind="scale", fraction=1.0)


def client(x, y):
    return ClientData(
        np.asarray(x, np.float32), np.asarray(y), np.zeros((1, 4), np.float32), np.array([5])
    )


def test_label_flipping_by_hand_leaves_the_test_split_alone():
    data = client(np.zeros((3, 4)), [0, 1, 9])
    flipped = poison(data, "label_flip", 10, 0, 0.5, 1.0, np.random.default_rng(0))
    assert flipped.y_train.tolist() == [9, 8, 0] and flipped.y_test.tolist() == [5]


def test_a_backdoor_marks_a_share_of_the_examples_and_relabels_them():
    data = client(np.zeros((6, 5)), [1, 2, 3, 4, 5, 6])
    chosen = np.random.default_rng(0).choice(6, size=3, replace=False)
    poisoned = poison(data, "backdoor", 10, 7, 0.5, 2.0, np.random.default_rng(0))
    for k in range(6):
        marked = k in chosen
        assert poisoned.x_train[k].tolist() == ([0.0] + [2.0] * 4 if marked else [0.0] * 5)
        assert poisoned.y_train[k] == (7 if marked else k + 1)
    assert data.x_train.sum() == 0  # the original is not touched
    images = add_trigger(np.zeros((2, 1, 8, 8)), 1.0)
    assert images[0, 0, 7].tolist() == [0, 0, 0, 0, 1, 1, 1, 1] and images.sum() == 8
    assert add_trigger(np.zeros((0, 5)), 1.0).shape == (0, 5)  # an attacker with no example marked


def test_only_the_attackers_data_is_poisoned():
    clients = {f"c{k}": client(np.zeros((2, 4)), [0, 1]) for k in range(3)}
    poisoned = PoisonedClients(clients, ["c1"], lambda cid, d: replace(d, y_train=d.y_train + 1))
    assert list(poisoned) == ["c0", "c1", "c2"] and len(poisoned) == 3
    assert poisoned["c0"] is clients["c0"] and poisoned["c1"].y_train.tolist() == [1, 2]


@pytest.mark.slow  # a whole run or a process, seconds
def test_a_backdoor_succeeds_against_the_mean_and_much_less_against_the_median():
    base = {
        "data": {"num_clients": 40},
        "run": {"rounds": 12, "clients_per_round": 20, "evaluate_every": 0},
    }
    attack = {"kind": "backdoor", "fraction": 0.3}
    plain = fedstream.simulate(attack=attack, **base).final_metrics
    robust = fedstream.simulate(
        strategy={"aggregator": "median"}, attack=attack, **base
    ).final_metrics
    assert plain["central_backdoor_success"] > 0.6  # 0.82
    assert robust["central_backdoor_success"] < 0.4  # 0.21
    assert plain["central_accuracy"] > 0.85  # the backdoor hides: clean accuracy stays high
    clean = fedstream.simulate(**base).final_metrics
    assert "central_backdoor_success" not in clean


def test_data_attacks_need_labels_and_a_real_target_class():
    with pytest.raises(
        ConfigError,
        match=r"^attack\.kind='label_flip' is invalid: expected an update attack with the",
    ):
        make_config(kind="label_flip", dataset="diabetes", num_clients=10, clients_per_round=5)
    with pytest.raises(
        ConfigError, match=r"^attack\.target=10 is invalid: expected a class below 10$"
    ):
        fedstream.simulate(attack={"kind": "backdoor", "target": 10}, run={"rounds": 1})
    make_config(kind="backdoor", codec="q8")  # the data attacks compose with a codec
