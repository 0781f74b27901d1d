"""SecAgg+: the primitives pinned, whole rounds through the real transport with dropouts
at every stage, what the server sees, and bad messages."""

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import pytest

from fedstream import ConfigError, FedAvg, RoundFailedError, run_round, simulate
from fedstream.secure.secagg import (
    SecAggConfig,
    SecAggError,
    choose_neighbours,
    decode_fixed,
    encode_fixed,
    neighbour_graph,
    pack,
    prg,
    round_failure_chance,
    shamir_combine,
    shamir_split,
    unpack,
)
from fedstream.simulation import build
from fedstream.transport.faults import Dropouts
from fedstream.transport.inprocess import InProcessTransport
from tests.settings import make_config, nested


def test_shamir_recovers_from_any_threshold_shares_and_not_from_fewer():
    secret = bytes(range(32))
    shares = shamir_split(secret, 7, 4)
    assert [x for x, _ in shares] == [1, 2, 3, 4, 5, 6, 7]
    assert shamir_combine(shares[:4]) == secret
    assert shamir_combine([shares[6], shares[1], shares[4], shares[0]]) == secret
    # 3 points of a degree-3 polynomial give a random field element, almost surely ≥ 2²⁵⁶
    with pytest.raises(SecAggError, match="do not combine to a valid secret"):
        shamir_combine(shares[:3])
    with pytest.raises(SecAggError, match="duplicate share indices"):
        shamir_combine([shares[0], shares[0], shares[1], shares[2]])
    # threshold 1: the one share is the secret itself. 2^256 is a field element but needs
    # 33 bytes, so it is not a 32-byte secret; one less is the largest that is
    with pytest.raises(SecAggError, match="do not combine to a valid secret"):
        shamir_combine([(1, 1 << 256)])
    assert shamir_combine([(1, (1 << 256) - 1)]) == b"\xff" * 32


def test_fixed_point_round_trip_and_range_checks():
    values = np.array([0.0, 1.5, -2.25, 1e-7, -123456.789])
    encoded = encode_fixed(values, 24, 2.0**20)
    assert encoded.dtype == np.uint64
    back = decode_fixed(encoded, 24)
    np.testing.assert_allclose(back, values, atol=2.0**-25)
    # sums of encoded values wrap mod 2^64 and still decode to the signed sum
    total = encoded + encode_fixed(-values * 3, 24, 2.0**20)
    np.testing.assert_allclose(decode_fixed(total, 24), -2 * values, atol=2.0**-23)
    with pytest.raises(SecAggError, match="contains NaN or Inf"):
        encode_fixed(np.array([np.nan]), 24, 1.0)
    with pytest.raises(SecAggError, match=r"magnitude 3 exceeds secagg_max_abs=2"):
        encode_fixed(np.array([1.0, -3.0]), 24, 2.0)


def test_prg_is_deterministic_per_seed():
    a, b = prg(b"\1" * 32, 1000), prg(b"\1" * 32, 1000)
    assert np.array_equal(a, b) and not np.array_equal(a, prg(b"\2" * 32, 1000))
    bits = np.unpackbits(a.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.01


@pytest.mark.parametrize(("n", "k"), [(10, 4), (11, 6), (10, 3), (12, 5), (5, 4), (5, 9)])
def test_neighbour_graph_is_regular_and_symmetric(n, k):
    ids = [f"c{i:02d}" for i in range(n)]
    graph = neighbour_graph(ids, k, np.random.default_rng(0))
    degree = min(k, n - 1)
    assert all(len(graph[u]) == degree for u in ids)
    assert all(u in graph[v] for u in ids for v in graph[u])
    assert all(u not in graph[u] for u in ids)


@pytest.mark.parametrize(
    ("config", "clients", "message"),
    [
        (SecAggConfig(neighbours=4, threshold=5), 10, "secagg_threshold=5 is invalid: expected at"),
        (
            SecAggConfig(neighbours=8, threshold=4),
            10,
            "secagg_threshold=4 is invalid: expected at least 5 with 8 neighbours",
        ),
        (
            SecAggConfig(neighbours=8, threshold=5, corrupt_fraction=0.25),
            10,
            "secagg_threshold=5 is invalid: expected at least 6 with 8 neighbours and corrupt",
        ),
        (
            SecAggConfig(neighbours=2, corrupt_fraction=0.9),
            10,
            r"secure.corrupt_fraction=0.9 is invalid: expected small enough",
        ),
        (
            SecAggConfig(neighbours=8, dropout_rate=0.3),
            10,
            r"secure.dropout_rate=0.3 is invalid: expected a rate 8 neighbours with threshold "
            r"5 survive.*secure.neighbours=9",
        ),
        (
            SecAggConfig(neighbours=12),
            10,
            r"^secagg_neighbours=12 is invalid: expected at most clients per round − 1 \(9\)$",
        ),
        (SecAggConfig(), 1, "clients_per_round=1 is invalid: expected at least 2"),
        (SecAggConfig(max_abs=2.0**37), 5, "secagg_max_abs=.* small enough that 5 clients"),
    ],
)
def test_bad_secagg_settings_are_named(config, clients, message):
    with pytest.raises(ConfigError, match=message):
        config.resolve(clients)
    with pytest.raises(ConfigError, match=r"secagg_fraction_bits=24 is invalid: expected frac"):
        SecAggConfig(max_abs=2.0**38)


class RecordingTransport(InProcessTransport):
    """The real in-process transport, recording everything the server receives and
    optionally tampering with what it forwards."""

    def __init__(self, clients, trainer, tamper=None):
        super().__init__(clients, trainer)
        self.received: list[tuple[str, str, object]] = []
        self.tamper = tamper or {}

    def fit(self, params, tasks):
        for delivery in super().fit(params, tasks):
            self.received.append(("fit", delivery.client_id, delivery.result))
            yield delivery

    def exchange(self, stage, round_number, requests):
        requests = {
            c: self.tamper[(stage, c)](r) if (stage, c) in self.tamper else r
            for c, r in requests.items()
        }
        for client_id, answer in super().exchange(stage, round_number, requests):
            self.received.append((stage, client_id, answer))
            yield client_id, answer


def make(clients=12, per_round=8, tamper=None, **changes):
    config = make_config(
        num_clients=clients,
        clients_per_round=per_round,
        partition="iid",
        local_epochs=1,
        trainer="sequential",
        **changes,
    )
    setup = build(config)
    transport = RecordingTransport(setup.dataset.clients, setup.trainer, tamper)
    return config, setup, transport, sorted(setup.dataset.clients)


def plain_and_secure(offline=None, secagg=None, **changes):
    """One round in plaintext and one with SecAgg+, from the same state and sample, with
    the clients in ``offline`` dropping at the given stage in the secure one (and not
    contributing to the plain one either)."""
    config, setup, transport, ids = make(**changes)
    plain_transport = Dropouts(
        InProcessTransport(setup.dataset.clients, setup.trainer),
        {
            c: "fit"
            for c, stage in (offline or {}).items()
            if stage not in ("consistency", "unmask")
        },
    )
    strategy = config.build_strategy()
    plain, _ = run_round(setup.initial, strategy, plain_transport, ids, config.round_config())
    secure_config = replace(config.round_config(), secure_aggregation=secagg or SecAggConfig())
    dropping = Dropouts(transport, offline or {})
    secure, report = run_round(setup.initial, strategy, dropping, ids, secure_config)
    return plain, secure, report, transport, setup


def test_the_secure_sum_equals_the_plain_sum_within_quantisation():
    plain, secure, report, _, _ = plain_and_secure()
    assert len(report.completed) == 8 and report.failures == ()
    # 8 clients × ½·2⁻²⁴ per entry of weight·Δ, then ÷ Σ weight: far below float32 rounding
    np.testing.assert_allclose(secure.params.flat(), plain.params.flat(), atol=1e-6)
    # each of the 8 uploads a masked vector of one uint64 per entry (and a weight), on top
    # of its keys, shares and signatures: at least that much, and not 3× more
    masked = 8 * 8 * (plain.params.flat().size + 1)
    assert masked < report.bytes_up < 3 * masked and report.bytes_down > 0


def sampled(setup, ids, count=8):
    return [ids[int(i)] for i in setup.initial.generator().choice(len(ids), count, replace=False)]


@pytest.mark.parametrize("neighbours", [None, 12])  # complete graph, and a sparse SecAgg+ one
def test_dropouts_at_every_stage_are_recovered(neighbours):
    _, setup, _, ids = make(clients=16, per_round=14)
    chosen = sampled(setup, ids, 14)
    offline = {
        chosen[0]: "advertise", chosen[1]: "share", chosen[2]: "mask",
        chosen[3]: "consistency", chosen[4]: "unmask",
    }  # fmt: skip
    secagg = SecAggConfig(neighbours=neighbours)  # t = ⌊k/2⌋ + 1: 7 of 12 or 13
    plain, secure, report, _, _ = plain_and_secure(offline, secagg, clients=16, per_round=14)
    # the late dropouts' inputs are in the sum (masked); the earlier dropouts' are not
    assert set(report.completed) == set(chosen) - set(chosen[:3])
    assert {(f.client_id, f.stage) for f in report.failures} == {(c, s) for c, s in offline.items()}
    np.testing.assert_allclose(secure.params.flat(), plain.params.flat(), atol=1e-6)


def test_too_many_dropouts_fail_the_round_saying_what_was_needed():
    config, setup, transport, ids = make()
    chosen = sampled(setup, ids)
    dropping = Dropouts(transport, {c: "unmask" for c in chosen[:6]})  # 2 left; threshold 4
    secure_config = replace(
        config.round_config(), secure_aggregation=SecAggConfig(neighbours=7, threshold=4)
    )
    with pytest.raises(
        RoundFailedError, match=r"self-mask seed: needs 4 shares, [12] of its neighbours remained"
    ):
        run_round(setup.initial, FedAvg(), dropping, ids, secure_config)
    assert setup.initial.round == 0  # the state passed in is untouched


def test_the_server_sees_nothing_but_the_sum():
    _, _, _, transport, _ = plain_and_secure()
    fit_answers = [r for stage, _, r in transport.received if stage == "fit"]
    assert all(len(r.payload) == 0 and r.weight == 0.0 for r in fit_answers)  # no update
    masked = {c: unpack(r, "m")[1] for stage, c, r in transport.received if stage == "mask"}
    assert len(masked) == 8
    revealed = {
        c: unpack(r, "u")[0]["shares"] for stage, c, r in transport.received if stage == "unmask"
    }
    # for every client in the sum the server gets self-mask shares, never mask-key shares
    kinds = {
        (owner, kind) for shares in revealed.values() for owner, (_, _, kind) in shares.items()
    }
    assert {kind for _, kind in kinds} == {"b"}
    for client, blob in masked.items():
        vector = np.frombuffer(blob, dtype=np.uint64)
        # what the server could compute: decode the masked vector, even knowing b_u
        shares = [
            (x, int(y, 16)) for s in revealed.values() for o, (x, y, _) in s.items() if o == client
        ]
        without_self_mask = vector - prg(shamir_combine(shares), len(vector))
        decoded = decode_fixed(without_self_mask, 24)
        # a real entry of weight·Δ is at most a few units; the masked ones are ~2^38 wide
        assert np.median(np.abs(decoded)) > 1e9
        bits = np.unpackbits(without_self_mask.view(np.uint8))
        assert abs(bits.mean() - 0.5) < 0.01  # uniform-looking words


def round_with_tampered_mask_request(victim_index, tamper):
    """One SecAgg+ round in which the server rewrites the mask request of the sampled
    client ``victim_index`` with ``tamper``: the victim's id and the round's report."""
    config, setup, _, ids = make()
    victim = sampled(setup, ids)[victim_index]
    _, _, transport, _ = make(tamper={("mask", victim): tamper})
    secure_config = replace(config.round_config(), secure_aggregation=SecAggConfig())
    _, report = run_round(setup.initial, FedAvg(), transport, ids, secure_config)
    return victim, report


def test_a_tampered_share_is_refused_and_the_round_goes_on():
    def flip(request):
        header, blob = unpack(request, "mask request")
        sender = sorted(header["shares"])[0]
        sealed = bytearray.fromhex(header["shares"][sender])
        sealed[20] ^= 1
        header["shares"][sender] = sealed.hex()
        return pack(header, blob)

    victim, report = round_with_tampered_mask_request(5, flip)
    failure = next(f for f in report.failures if f.client_id == victim)
    assert failure.stage == "mask" and "fails authentication" in failure.cause
    assert len(report.completed) == 7


def test_a_mask_request_with_a_share_from_a_client_that_shared_no_keys_is_refused():
    # a lying server slips in a share "from" a client outside the victim's key exchange
    def forge(request):
        header, blob = unpack(request, "mask request")
        header["shares"]["not-a-neighbour"] = next(iter(header["shares"].values()))
        return pack(header, blob)

    victim, report = round_with_tampered_mask_request(2, forge)
    (failure,) = report.failures
    assert failure.client_id == victim and failure.stage == "mask"
    assert failure.cause.startswith(
        "SecAggError: mask request: shares must come from neighbours that shared keys (at "
    )
    assert len(report.completed) == 7


def test_a_masked_vector_of_the_wrong_size_or_a_truncated_message_is_refused():
    config, setup, transport, ids = make()
    chosen = sampled(setup, ids)
    original = transport.exchange

    def broken(stage, round_number, requests):
        for client_id, answer in original(stage, round_number, requests):
            if stage == "mask" and client_id == chosen[0]:
                answer = answer[:-8]
            if stage == "mask" and client_id == chosen[1]:
                answer = answer[:3]
            yield client_id, answer

    transport.exchange = broken
    secure_config = replace(config.round_config(), secure_aggregation=SecAggConfig())
    _, report = run_round(setup.initial, FedAvg(), transport, ids, secure_config)
    causes = {f.client_id: f.cause for f in report.failures}
    assert "expected 8 ×" in causes[chosen[0]]
    assert "truncated message of 3 bytes" in causes[chosen[1]]
    assert len(report.completed) == 6


@dataclass(frozen=True)
class CoordinateMedian(FedAvg):
    """Stands in for a robust aggregator that must see every update."""

    name: ClassVar[str] = "median"
    needs_individual_updates: ClassVar[bool] = True


def test_an_aggregator_that_needs_each_update_cannot_use_secure_aggregation():
    config, setup, transport, ids = make()
    secure_config = replace(config.round_config(), secure_aggregation=SecAggConfig())
    with pytest.raises(ConfigError, match=r"secure_aggregation='secagg\+' is invalid.*median"):
        run_round(setup.initial, CoordinateMedian(), transport, ids, secure_config)
    with pytest.raises(ConfigError, match=r"secure\.scheme='tee' is invalid"):
        make_config(secure_aggregation="tee")
    with pytest.raises(ConfigError, match=r"secure\.threshold=30 is invalid"):
        make_config(secure_aggregation="secagg+", secagg_threshold=30)


def test_secure_aggregation_with_central_dp_and_adaptive_clipping():
    common = dict(
        num_clients=12, clients_per_round=8, rounds=2, local_epochs=1, partition="iid",
        dp="client", dp_noise=0.5, dp_adaptive_clip=True, dp_clip=0.05, evaluate_every=0,
        dp_secure_noise=False,
    )  # fmt: skip
    plain = simulate(**nested(**common))
    secure = simulate(**nested(**common, secure_aggregation="secagg+"))
    # the centred clipping bits travel inside the secure sum; the DP noise draws are the same
    assert secure.final_metrics["dp_clip"] == pytest.approx(plain.final_metrics["dp_clip"])
    np.testing.assert_allclose(secure.state.params.flat(), plain.state.params.flat(), atol=1e-5)
    assert secure.config.label == "fedavg + DP (client) + SecAgg+"


def test_a_public_key_of_the_wrong_size_drops_only_its_sender():
    config, setup, transport, ids = make()
    victim = sampled(setup, ids)[2]
    original = transport.exchange

    def short_key(stage, round_number, requests):
        for client_id, answer in original(stage, round_number, requests):
            if stage == "advertise" and client_id == victim:
                header, blob = unpack(answer, "keys")
                answer = pack({**header, "mask_key": header["mask_key"][:-2]}, blob)
            yield client_id, answer

    transport.exchange = short_key
    secure_config = replace(config.round_config(), secure_aggregation=SecAggConfig())
    _, report = run_round(setup.initial, FedAvg(), transport, ids, secure_config)
    failure = next(f for f in report.failures if f.client_id == victim)
    assert failure.stage == "advertise" and "'mask_key' has 31 bytes, expected 32" in failure.cause
    assert len(report.completed) == 7


@pytest.mark.parametrize(
    "strategy", ["fedavg", "fedprox", "fedsgd", "fedavgm", "fedadam", "fedyogi", "fedadagrad"]
)
def test_every_strategy_gets_the_same_model_through_secagg(strategy):
    plain, secure, report, _, _ = plain_and_secure(strategy=strategy)
    assert len(report.completed) == 8
    np.testing.assert_allclose(secure.params.flat(), plain.params.flat(), atol=1e-5)
    for name, moment in plain.optimizer.items():
        np.testing.assert_allclose(secure.optimizer[name].flat(), moment.flat(), atol=1e-5)


def test_neighbours_are_chosen_for_the_dropout_rate_and_threshold_above_half():
    # 100 clients dropping at 10 %: the fewest neighbours whose t = ⌊k/2⌋ + 1 a round
    # survives with chance of failure ≤ 1e-6 (union bound over the clients)
    k, t = SecAggConfig(dropout_rate=0.1).resolve(100)
    assert (k, t) == (choose_neighbours(100, 0.1, 0.0), k // 2 + 1)
    assert (
        round_failure_chance(100, k, t, 0.1)
        <= 1e-6
        < round_failure_chance(100, k - 1, (k - 1) // 2 + 1, 0.1)
    )
    assert SecAggConfig(dropout_rate=0.3).resolve(100)[0] > k  # more dropout, more neighbours
    assert SecAggConfig().resolve(100) == (20, 11)  # no rate given: min(n − 1, 20)
