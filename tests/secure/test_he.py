"""Homomorphic-encryption secure sums: CKKS precision per preset, Paillier's exact packed
sums, the server's inability to decrypt, whole rounds, and bad ciphertexts."""

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import pytest

from fedstream import ConfigError, FedAvg, RoundFailedError, run_round, simulate
from fedstream.secure.he import (
    CKKS,
    CKKS_PRESETS,
    CKKSConfig,
    Paillier,
    PaillierConfig,
    join_ciphertexts,
    split_ciphertexts,
)
from fedstream.secure.secagg import SecAggError, pack, unpack
from fedstream.simulation import build
from fedstream.transport.faults import Dropouts
from fedstream.transport.inprocess import InProcessTransport
from tests.settings import make_config, nested

# the bound on the decrypted sum of 10 vectors of N(0, 10²) against the float64 sum,
# about 4× what was measured (1.2e-2, 2.8e-8, 5.4e-11)
CKKS_BOUNDS = {"n4096": 5e-2, "n8192": 1e-7, "n16384": 2e-10}


@pytest.mark.parametrize("preset", list(CKKS_PRESETS))
def test_ckks_sum_precision_per_preset(preset):
    rng = np.random.default_rng(0)
    config = CKKSConfig(preset)
    holder = CKKS.generate(config)
    server = CKKS.public(config, holder.public_bytes())
    vectors = [rng.normal(0, 10, 5000) for _ in range(10)]
    total = None
    for vector in vectors:
        client = CKKS.public(config, holder.public_bytes())
        ciphertexts = client.encrypt(vector)
        assert len(ciphertexts) == server.count(5000)
        total = server.add(total, [server.load(c, "c") for c in ciphertexts])
    decrypted = holder.decrypt(server.dump(total), 5000)
    assert np.abs(decrypted - np.sum(vectors, axis=0)).max() < CKKS_BOUNDS[preset]


def test_the_server_holds_no_secret_key_and_cannot_decrypt():
    config = CKKSConfig("n4096")
    holder = CKKS.generate(config)
    public = holder.public_bytes()
    server = CKKS.public(config, public)
    assert not server.context.has_secret_key()
    ciphertext = server.load(holder.encrypt(np.ones(4))[0], "c")
    with pytest.raises(ValueError, match="doesn't hold a secret_key"):
        ciphertext.decrypt()
    # the public context leaves out the relinearisation and Galois (rotation) keys
    full = len(holder.context.serialize(save_secret_key=False))
    assert len(public) < full / 2
    with pytest.raises(SecAggError, match="holds a secret key"):
        CKKS.public(config, bytes(holder.context.serialize(save_secret_key=True)))


def test_paillier_packed_sums_are_exact():
    config = PaillierConfig(fraction_bits=16, max_abs=2.0**10)
    holder = Paillier.generate(config)
    clients = 7
    holder.clients = clients
    server = Paillier.public(config, holder.public_bytes())
    server.clients = clients
    rng = np.random.default_rng(1)
    vectors = [rng.uniform(-1024, 1024, 300) for _ in range(clients)]
    vectors[0][:3] = [-1024.0, 1024.0, 0.0]  # the edges of the range, and zero
    total = None
    for vector in vectors:
        sender = Paillier.public(config, holder.public_bytes())
        sender.clients = clients
        total = server.add(total, [server.load(c, "c") for c in sender.encrypt(vector)])
    decrypted = holder.decrypt_sum(server.dump(total), 300, clients)
    quantised = sum(np.round(v * 2.0**16) for v in vectors) / 2.0**16
    np.testing.assert_array_equal(decrypted, quantised)  # exact: integer sums, no carries
    assert server.count(300) == -(-300 // config.per_plaintext(clients))
    with pytest.raises(SecAggError, match="at most paillier_max_abs=1024"):
        sender.encrypt(np.array([2000.0]))


def test_ciphertext_lists_round_trip_and_refuse_truncation():
    items = [b"abc", b"", b"x" * 1000]
    assert split_ciphertexts(join_ciphertexts(items), "m") == items
    with pytest.raises(SecAggError, match="truncated"):
        split_ciphertexts(join_ciphertexts(items)[:-5], "m")


def make(secure, **changes):
    config = make_config(
        num_clients=10,
        clients_per_round=6,
        partition="iid",
        local_epochs=1,
        model="linear",
        trainer="sequential",
        **changes,
    )
    setup = build(config)
    transport = InProcessTransport(setup.dataset.clients, setup.trainer)
    secure_config = replace(config.round_config(), secure_aggregation=secure)
    return config, setup, transport, sorted(setup.dataset.clients), secure_config


@pytest.mark.parametrize(
    ("secure", "tolerance"),
    # CKKS: the key holder floods each decrypted slot with N(0, 0.029²) (2^20 × the n8192
    # error), on a sum whose weights total about 850, so each parameter moves by ~3e-5
    [(CKKSConfig("n8192"), 2e-4), (PaillierConfig(key_bits=2048), 1e-4)],
    ids=["ckks", "paillier"],
)
def test_a_round_under_he_matches_the_plain_round(secure, tolerance):
    config, setup, transport, ids, secure_config = make(secure)
    plain, _ = run_round(setup.initial, FedAvg(), transport, ids, config.round_config())
    encrypted, report = run_round(setup.initial, FedAvg(), transport, ids, secure_config)
    assert len(report.completed) == 6 and report.failures == ()
    np.testing.assert_allclose(encrypted.params.flat(), plain.params.flat(), atol=tolerance)
    # every one of the 6 uploads an encryption of its whole update, which is larger than
    # the update in the clear (CKKS and Paillier ciphertexts both expand what they hold)
    assert report.bytes_up > 6 * plain.params.wire_size()


def tamper_transport(transport, stage, client_id, change):
    original = transport.exchange

    def exchange(name, round_number, requests):
        for answer_id, answer in original(name, round_number, requests):
            if name == stage and answer_id == client_id:
                answer = change(answer)
            yield answer_id, answer

    transport.exchange = exchange


def flip_a_bit(answer):
    header, blob = unpack(answer, "a")
    blob = bytearray(blob)
    blob[len(blob) // 2] ^= 1
    return pack(header, bytes(blob))


def drop_a_ciphertext(answer):
    header, blob = unpack(answer, "a")
    items = split_ciphertexts(blob, "a")
    return pack({**header, "sha256": header["sha256"][:-1]}, join_ciphertexts(items[:-1]))


def another_key(answer):
    header, blob = unpack(answer, "a")
    return pack({**header, "fingerprint": "0" * 64}, blob)


def truncate(answer):
    return answer[: len(answer) - 100]


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        (flip_a_bit, "does not match its SHA-256 (tampered)"),
        (drop_a_ciphertext, "ciphertexts, expected"),
        (another_key, "were made under another key"),
        (truncate, "truncated"),
    ],
)
def test_bad_ciphertexts_drop_only_their_client(change, cause):
    _, setup, transport, ids, secure_config = make(CKKSConfig("n4096"))
    victim = sorted(ids[int(i)] for i in setup.initial.generator().choice(10, 6, replace=False))[3]
    tamper_transport(transport, "encrypt", victim, change)
    _, report = run_round(setup.initial, FedAvg(), transport, ids, secure_config)
    failure = next(f for f in report.failures if f.client_id == victim)
    assert failure.stage == "encrypt" and cause in failure.cause
    assert len(report.completed) == 5


def test_the_round_fails_cleanly_when_the_key_holder_is_gone():
    _, setup, transport, ids, secure_config = make(CKKSConfig("n4096"))
    chosen = sorted(ids[int(i)] for i in setup.initial.generator().choice(10, 6, replace=False))
    gone = Dropouts(transport, {chosen[0]: "keys"})
    with pytest.raises(RoundFailedError, match=f"key holder '{chosen[0]}' gave no public key"):
        run_round(setup.initial, FedAvg(), gone, ids, secure_config)
    gone = Dropouts(transport, {chosen[0]: "decrypt"})
    with pytest.raises(RoundFailedError, match="did not return the decrypted sum"):
        run_round(setup.initial, FedAvg(), gone, ids, secure_config)
    assert setup.initial.round == 0


@dataclass(frozen=True)
class CoordinateMedian(FedAvg):
    name: ClassVar[str] = "median"
    needs_individual_updates: ClassVar[bool] = True


def test_bad_he_settings_are_named():
    with pytest.raises(ConfigError, match="he_preset='n2048' is invalid"):
        make_config(secure_aggregation="ckks", he_preset="n2048")
    with pytest.raises(ConfigError, match="paillier_key_bits=1024 is invalid"):
        make_config(secure_aggregation="paillier", paillier_key_bits=1024)
    _, setup, transport, ids, secure_config = make(CKKSConfig())
    with pytest.raises(ConfigError, match=r"secure_aggregation='ckks' is invalid.*median"):
        run_round(setup.initial, CoordinateMedian(), transport, ids, secure_config)


def test_he_runs_with_dp_and_reports_like_any_other_run():
    common = dict(
        num_clients=8, clients_per_round=4, rounds=2, local_epochs=1, model="linear",
        partition="iid", dp="client", dp_noise=0.3, dp_secure_noise=False, evaluate_every=0,
        sampling="fixed",
    )  # fmt: skip
    plain = simulate(**nested(**common))
    ckks = simulate(**nested(**common, secure_aggregation="ckks"))
    # the key holder's noise flooding, N(0, 0.029²) per slot of a sum of 4 weight-1 updates:
    # about 0.01 per parameter after two rounds
    difference = ckks.state.params.flat() - plain.state.params.flat()
    assert 0 < np.abs(difference).max() < 0.06
    assert ckks.config.label == "fedavg + DP (client) + CKKS"


@pytest.mark.parametrize(
    "strategy", ["fedprox", "fedsgd", "fedavgm", "fedadam", "fedyogi", "fedadagrad"]
)
def test_every_strategy_gets_the_same_model_under_paillier(strategy):
    # Paillier sums are exact up to 2^-16 per entry; CKKS results carry the key holder's
    # flooding noise, which adaptive optimisers amplify where an update is near zero
    secure = PaillierConfig(key_bits=2048)
    config, setup, transport, ids, secure_config = make(secure, strategy=strategy)
    strategy_object = config.build_strategy()
    plain, _ = run_round(setup.initial, strategy_object, transport, ids, config.round_config())
    encrypted, _ = run_round(setup.initial, strategy_object, transport, ids, secure_config)
    np.testing.assert_allclose(encrypted.params.flat(), plain.params.flat(), atol=1e-5)
