"""Compressed updates and broadcasts: specs, round trips, error feedback, exact byte counts,
and malformed payloads refused through the real round loop."""

import math
import re
from dataclasses import replace

import numpy as np
import pytest

from fedstream import ConfigError, FedAvg, Params, run_round, simulate
from fedstream.compression import (
    Compression,
    CompressionError,
    decode_broadcast,
    decode_update,
    encode_broadcast,
    encode_update,
)
from fedstream.compression.codecs import PAYLOAD, encode_gaps
from fedstream.secure.secagg import SecAggConfig
from fedstream.simulation import build
from fedstream.transport.inprocess import InProcessTransport
from tests.settings import make_config, nested


def update(seed=0, size=(50, 200)):
    rng = np.random.default_rng(seed)
    return Params({"w": rng.normal(0, 1, size).astype(np.float32), "b": rng.normal(0, 1, 7)})


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("none", "none"),
        ("topk:0.01", "topk:0.01"),
        ("topk:0.05+q4", "topk:0.05+q4"),
        ("q8", "q8"),
        ("randk:0.1+qsgd:8", "randk:0.1+qsgd:8"),
        ("qsgd", "qsgd:16"),
        (" threshold:0.001 + q8 ", "threshold:0.001+q8"),
    ],
)
def test_specs_parse_to_their_canonical_form(spec, canonical):
    assert Compression.parse(spec).spec == canonical


@pytest.mark.parametrize(
    "spec", ["topk", "topk:0", "topk:1.5", "q8+q4", "topk:0.1+randk:0.1", "zip", "qsgd:500"]
)
def test_bad_specs_are_named(spec):
    with pytest.raises(ConfigError, match=re.escape(f"compression='{spec}' is invalid")):
        Compression.parse(spec)


def test_topk_sends_the_largest_entries_and_keeps_the_rest_as_residual():
    payload = update()
    codec = Compression.parse("topk:0.01")
    encoded, residual = encode_update(payload, codec, None, seed=3)
    decoded = decode_update(encoded, payload, codec, seed=3)
    flat, sent = payload.flat(np.float64), decoded.flat(np.float64)
    kept = math.ceil(0.01 * flat.size)
    assert np.count_nonzero(sent) == kept
    threshold = np.sort(np.abs(flat))[-kept]
    assert np.all(np.abs(flat[sent != 0]) >= threshold)
    # what was sent plus what stays on the client is the update, exactly
    np.testing.assert_allclose(sent + residual.flat(np.float64), flat, atol=1e-6)
    # exact byte count: count (4) + the index gaps as varints + float32 values (4 each)
    gaps = encode_gaps(np.flatnonzero(sent))
    assert encoded[PAYLOAD].size == 4 + len(gaps) + kept * 4
    assert kept <= len(gaps) <= 2 * kept  # gaps under 16,384 take at most 2 bytes
    # the next round sends old residual + new update
    again, residual2 = encode_update(payload, codec, residual, seed=4)
    total = decode_update(again, payload, codec, 4).flat(np.float64) + residual2.flat(np.float64)
    np.testing.assert_allclose(total, 2 * flat - sent, atol=1e-5)


def test_randk_sends_no_indices_and_the_server_regenerates_them():
    payload = update()
    codec = Compression.parse("randk:0.05")
    encoded, _ = encode_update(payload, codec, None, seed=11)
    kept = math.ceil(0.05 * payload.num_elements)
    assert encoded[PAYLOAD].size == 4 + 4 * kept
    decoded = decode_update(encoded, payload, codec, seed=11).flat(np.float64)
    positions = np.flatnonzero(decoded)
    np.testing.assert_allclose(decoded[positions], payload.flat(np.float64)[positions], rtol=1e-6)


@pytest.mark.parametrize(("spec", "levels"), [("q8", 255), ("q4", 15)])
def test_uniform_quantisation_is_within_one_step_and_unbiased(spec, levels):
    payload = update()
    flat = payload.flat(np.float64)
    step = (flat.max() - flat.min()) / levels
    codec = Compression.parse(spec)
    runs = [
        decode_update(encode_update(payload, codec, None, s)[0], payload, codec, s)
        for s in range(40)
    ]
    errors = [np.abs(r.flat(np.float64) - flat).max() for r in runs]
    assert max(errors) <= step * 1.0001
    mean = np.mean([r.flat(np.float64) for r in runs], axis=0)
    assert np.abs(mean - flat).mean() < step / 10  # stochastic rounding: unbiased
    size = encode_update(payload, codec, None, 0)[0][PAYLOAD].size
    codes = flat.size if spec == "q8" else (flat.size + 1) // 2
    assert size == 4 + 8 + codes


def test_qsgd_is_unbiased():
    payload = Params({"w": np.linspace(-1, 1, 101)})
    codec = Compression.parse("qsgd:4")
    runs = [
        decode_update(encode_update(payload, codec, None, s)[0], payload, codec, s)
        for s in range(4000)
    ]
    mean = np.mean([r["w"] for r in runs], axis=0)
    np.testing.assert_allclose(mean, payload["w"], atol=0.08)


def corrupt(encoded, cut=0, extra=b"", patch=None, repeat=False):
    blob = bytearray(encoded[PAYLOAD].tobytes())
    if repeat:  # two indices, 5 and 5 again (a gap of 0), then their two values
        blob = bytearray(np.uint32(2).tobytes() + encode_gaps(np.array([5, 5])) + bytes(8))
    if patch is not None:
        offset, value = patch
        blob[offset : offset + len(value)] = value
    blob = bytes(blob[: len(blob) - cut]) + extra
    return Params({PAYLOAD: np.frombuffer(blob, dtype=np.uint8)})


@pytest.mark.parametrize(
    ("spec", "damage", "message"),
    [
        ("topk:0.01", {"patch": (4, b"\xff\xff\x7f")}, "indices out of range"),
        ("topk:0.01", {"repeat": True}, "repeated indices"),
        ("topk:0.01", {"cut": 3}, "its length disagrees with its header"),
        ("q8", {"extra": b"\x00"}, "bytes left over"),
        ("none", {"patch": (4, np.float32(np.nan).tobytes())}, "decodes to NaN or Inf"),
        ("none", {"patch": (0, np.uint32(5).tobytes())}, "count 5 disagrees"),
    ],
)
def test_malformed_payloads_are_refused_with_the_reason(spec, damage, message):
    payload = update()
    codec = Compression.parse(spec)
    encoded, _ = encode_update(payload, codec, None, 0)
    with pytest.raises(CompressionError, match=message):
        decode_update(corrupt(encoded, **damage), payload, codec, 0)
    with pytest.raises(CompressionError, match="expected one entry"):
        decode_update(payload, payload, codec, 0)


@pytest.mark.parametrize("codec", ["f16", "q8"])
def test_broadcasts_decode_to_the_models_own_dtypes_and_shapes(codec):
    params = Params({"w": np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32),
                     "b": np.arange(5, dtype=np.float64)})  # fmt: skip
    decoded = decode_broadcast(encode_broadcast(params, codec, seed=1), codec)
    assert decoded.spec == params.spec
    tolerance = 1e-3 if codec == "f16" else (params["w"].max() - params["w"].min()) / 255
    np.testing.assert_allclose(decoded["w"], params["w"], atol=tolerance * 1.001)
    with pytest.raises(ConfigError, match="broadcast='zip' is invalid"):
        encode_broadcast(params, "zip", 0)


def make(**changes):
    config = make_config(
        num_clients=10, clients_per_round=5, partition="iid", local_epochs=1, **changes
    )
    setup = build(config)
    return config, setup, InProcessTransport(setup.dataset.clients, setup.trainer)


def test_a_compressed_round_counts_its_bytes_and_keeps_residuals_on_clients():
    config, setup, transport = make(compression="topk:0.01+q8", broadcast="q8")
    ids = sorted(setup.dataset.clients)
    _, report = run_round(setup.initial, FedAvg(), transport, ids, config.round_config())
    plain_config, _, plain_transport = make()
    _, plain = run_round(setup.initial, FedAvg(), plain_transport, ids, plain_config.round_config())
    assert len(report.completed) == 5 and report.failures == ()
    kept = math.ceil(0.01 * setup.initial.params.num_elements)
    assert report.bytes_up < plain.bytes_up / 50
    assert report.bytes_down < plain.bytes_down / 2.5
    header = len(Params({PAYLOAD: np.zeros(0, np.uint8)}).to_bytes())
    # count, 1-2 bytes per index gap, low and step, one byte per value; then the header
    least, most = header + 4 + kept + 8 + kept, header + 4 + 2 * kept + 8 + kept
    assert 5 * least <= report.bytes_up <= 5 * most
    assert sorted(transport.client_states()) == sorted(report.completed)


def test_a_client_sending_a_malformed_payload_is_dropped_and_recorded():
    config, setup, transport = make(compression="topk:0.01")
    ids = sorted(setup.dataset.clients)
    report_ids = [ids[int(i)] for i in setup.initial.generator().choice(10, 5, replace=False)]

    class BreaksOne:  # the network garbles one client's upload
        def __init__(self, inner):
            self.inner = inner
            self.evaluate, self.exchange = inner.evaluate, inner.exchange

        def fit(self, params, tasks):
            for delivery in self.inner.fit(params, tasks):
                if delivery.client_id == sorted(report_ids)[0]:
                    broken = corrupt(delivery.result.payload, patch=(4, b"\xff\xff\x7f"))
                    delivery = replace(delivery, result=replace(delivery.result, payload=broken))
                yield delivery

    _, report = run_round(setup.initial, FedAvg(), BreaksOne(transport), ids, config.round_config())
    failure = report.failures[0]
    assert failure.stage == "validate" and "indices out of range" in failure.cause
    assert len(report.completed) == 4


def test_sparsifiers_are_refused_with_secure_aggregation_and_quantisers_compose():
    with pytest.raises(
        ConfigError,
        match=r"compression\.codec='topk:0.01' is invalid: expected no sparsifier with secure",
    ):
        make_config(compression="topk:0.01", secure_aggregation="secagg+")
    config, setup, transport = make(compression="q8")
    ids = sorted(setup.dataset.clients)
    secure = replace(config.round_config(), secure_aggregation=SecAggConfig())
    plain, _ = run_round(setup.initial, FedAvg(), transport, ids, config.round_config())
    masked, report = run_round(setup.initial, FedAvg(), transport, ids, secure)
    assert len(report.completed) == 5
    # the same stochastic rounding (seeded by the task), summed in the clear or masked
    np.testing.assert_allclose(masked.params.flat(), plain.params.flat(), atol=1e-6)


def test_compressed_runs_are_reproducible_and_reported():
    first = simulate(
        **nested(num_clients=10, clients_per_round=5, rounds=3, compression="topk:0.1+q4")
    )
    again = simulate(
        **nested(num_clients=10, clients_per_round=5, rounds=3, compression="topk:0.1+q4")
    )
    assert first.state.params.bit_equal(again.state.params)
    assert [r.bytes_up for r in first.reports] == [r.bytes_up for r in again.reports]
    # 5 clients × the top 10 % of entries, each a 4-bit code and an index gap of 1 or 2
    # bytes, plus a few hundred bytes of header and scale each
    kept = math.ceil(0.1 * first.state.params.flat().size)
    assert 5 * kept * 1.5 <= first.reports[-1].bytes_up <= 5 * (kept * 2.5 + 400)


def test_pruning_zeros_the_smallest_weights_or_rows_and_leaves_vectors_alone():
    from fedstream.compression.pruning import kept_mask, prune

    params = Params({
        "w": np.array([[0.1, -3.0, 0.2], [4.0, -0.05, 1.0]]),
        "b": np.array([0.001, 2.0]),
    })  # fmt: skip
    single = prune(params, 0.5)
    np.testing.assert_array_equal(single["w"], [[0.0, -3.0, 0.0], [4.0, 0.0, 1.0]])
    np.testing.assert_array_equal(single["b"], params["b"])  # biases are never pruned
    rows = prune(params, 0.5, structured=True)  # row norms 3.008 and 4.123: the first goes
    np.testing.assert_array_equal(rows["w"], [[0, 0, 0], [4.0, -0.05, 1.0]])
    np.testing.assert_array_equal(kept_mask(single), [0, 1, 0, 1, 0, 1, 1, 1])
    assert params["w"][0, 0] == 0.1  # the input is untouched
    with pytest.raises(ConfigError, match=r"prune_fraction=1\.0 is invalid"):
        prune(params, 1.0)


def test_a_masked_update_sends_only_the_kept_entries():
    from fedstream.compression.pruning import kept_mask

    payload = update()
    mask = np.random.default_rng(2).random(payload.num_elements) < 0.3
    codec = Compression.parse("none")
    encoded, _ = encode_update(payload, codec, None, 0, mask)
    assert encoded[PAYLOAD].size == 4 + 4 * int(mask.sum())
    decoded = decode_update(encoded, payload, codec, 0, mask).flat(np.float64)
    np.testing.assert_allclose(decoded[mask], payload.flat(np.float64)[mask], rtol=1e-6)
    assert not decoded[~mask].any()
    assert kept_mask(payload).all()


@pytest.mark.parametrize("trainer", ["sequential", "vectorized"])
def test_pruned_weights_stay_zero_through_training_and_rounds(trainer):
    from fedstream.compression.pruning import prunable

    result = simulate(
        **nested(
            num_clients=10,
            clients_per_round=5,
            rounds=3,
            prune_fraction=0.6,
            trainer=trainer,
            compression="topk:0.2+q8",
        )
    )
    for name, array in result.state.params.items():
        if prunable(array):
            assert (array == 0).mean() == pytest.approx(0.6, abs=0.01), name
    assert all(not r.failures for r in result.reports)
    dense = simulate(
        **nested(
            num_clients=10,
            clients_per_round=5,
            rounds=3,
            trainer=trainer,
            compression="topk:0.2+q8",
        )
    )
    assert result.reports[-1].bytes_up < 0.6 * dense.reports[-1].bytes_up


def test_threshold_with_q8_sends_every_large_entry_and_keeps_what_the_server_decodes_short():
    payload = update()
    codec = Compression.parse("threshold:0.05+q8")
    encoded, residual = encode_update(payload, codec, None, seed=5)
    decoded = decode_update(encoded, payload, codec, seed=5).flat(np.float64)
    flat = payload.flat(np.float64)
    large = np.abs(flat) >= 0.05
    assert (flat[large] < 0).any() and (flat[large] > 0).any()  # both signs are large
    # exactly the entries of magnitude ≥ τ are sent, negative ones too
    np.testing.assert_array_equal(decoded != 0, large)
    # the residual is the update less what the server decodes (after q8's rounding), not
    # less what was sent before quantisation: the two differ, and only this one sums back
    assert not np.allclose(decoded[large], flat[large], atol=1e-7)
    np.testing.assert_allclose(decoded + residual.flat(np.float64), flat, atol=1e-9)
