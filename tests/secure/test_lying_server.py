"""SecAgg+ against a server that lies: it plays the protocol with real client devices, and
each test makes one of the moves a malicious server has (an unsafe threshold, different
survivor sets for different clients, keys of its own in place of a client's). Each move
either makes the clients refuse, loudly, or leaves the server unable to unmask anyone."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedstream import ClientUpdate, ConfigError, Params
from fedstream.secure.he import (
    CKKSConfig,
    PaillierConfig,
    config_header,
    fingerprint,
    join_ciphertexts,
    split_ciphertexts,
)
from fedstream.secure.secagg import (
    DerivedRoster,
    Identity,
    SecAggError,
    advertised,
    decode_fixed,
    derived_identity_key,
    pack,
    prg,
    shamir_combine,
    unpack,
)
from fedstream.secure.session import SecureDevice

ROUND = 1
IDS = [f"c{i}" for i in range(8)]
VICTIM = "c0"
SECRET = 1234567


def devices() -> dict[str, SecureDevice]:
    """Eight real client devices, each holding an update of ones × its index + 1."""
    out = {}
    for k, client in enumerate(IDS):
        identity = Identity(client, derived_identity_key(SECRET, client), DerivedRoster(SECRET))
        device = SecureDevice(client, identity)
        device.hold(ClientUpdate(client, ROUND, Params({"w": np.full(5, k + 1.0)}), 1.0))
        out[client] = device
    return out


def advertise(clients, threshold, round_number=ROUND):
    """Stage 1 over a complete graph (k = 7) with the threshold the server chooses."""
    answers = {}
    for u, device in clients.items():
        request = pack(
            {"threshold": threshold, "fraction_bits": 24, "max_abs": 2.0**20,
             "neighbours": [v for v in IDS if v != u]}
        )  # fmt: skip
        answers[u] = unpack(device.answer("advertise", round_number, request), "keys")[0]
    return answers


def share_and_mask(clients, keys, round_number=ROUND):
    """Stages 2 and 3, relayed honestly: the masked vectors and who holds whose shares."""
    inbox: dict[str, dict[str, str]] = {u: {} for u in clients}
    for u, device in clients.items():
        request = pack({"keys": {v: keys[v] for v in IDS if v != u}})
        sealed = unpack(device.answer("share", round_number, request), "shares")[0]["shares"]
        for v, ciphertext in sealed.items():
            inbox[v][u] = ciphertext
    masked = {}
    for u, device in clients.items():
        answer = device.answer("mask", round_number, pack({"shares": inbox[u]}))
        blob = unpack(answer, "masked")[1]
        masked[u] = np.frombuffer(blob, dtype=np.uint64)
    return masked


def test_a_client_refuses_a_threshold_that_lets_the_server_collect_both_kinds_of_share():
    clients = devices()
    # the old default, t = ⌈k/4⌉ = 2 of 7: two honest neighbours told "live" and two told
    # "dropped" would hand over both secrets of one client
    for u, device in clients.items():
        request = pack(
            {"threshold": 2, "fraction_bits": 24, "max_abs": 2.0**20,
             "neighbours": [v for v in IDS if v != u]}
        )  # fmt: skip
        with pytest.raises(SecAggError, match="threshold=2 is invalid: expected at least 4"):
            device.answer("advertise", ROUND, request)


@pytest.mark.parametrize("forward", ["all", "matching"])
@pytest.mark.parametrize("split", [4, 5])
def test_survivor_sets_that_differ_between_clients_leave_the_victim_masked(split, forward):
    """The issue's attack: tell some clients the victim is alive (they reveal shares of its
    self-mask seed) and others that it dropped (they reveal shares of its mask key)."""
    clients = devices()
    keys = advertise(clients, threshold=4)
    masked = share_and_mask(clients, keys)
    told_live = IDS[:split]  # the victim and split − 1 others see everyone survive
    story = {u: IDS if u in told_live else IDS[1:] for u in IDS}
    signatures = {}
    for u, device in clients.items():
        if u in story[u]:  # the victim is not asked in the "dropped" story
            reply = device.answer("consistency", ROUND, pack({"survivors": story[u]}))
            signatures[u] = unpack(reply, "signature")[0]["signature"]
    shares: dict[str, list[tuple[int, int]]] = {"b": [], "s": []}
    refused = []
    for u, device in clients.items():
        if u not in signatures:
            continue
        # every signature it has, or only those over the set this client was shown
        given = {
            w: sig for w, sig in signatures.items() if forward == "all" or story[w] == story[u]
        }
        request = pack({"survivors": story[u], "signatures": given})
        try:
            revealed = unpack(device.answer("unmask", ROUND, request), "shares")[0]["shares"]
        except SecAggError as exc:
            refused.append((u, str(exc)))
            continue
        if VICTIM in revealed:
            x, y, kind = revealed[VICTIM]
            shares[kind].append((x, int(y, 16)))
    # clients refuse, naming the lie: a neighbour signed another set, or too few signed
    # theirs (a threshold above half means two stories cannot both gather enough)
    reason = "did not sign the survivor set" if forward == "all" else "neighbours confirmed"
    assert refused and all(reason in message for _, message in refused)
    # so the server never holds 4 shares of both the victim's secrets
    assert len(shares["b"]) < 4 or len(shares["s"]) < 4
    if split == 5 and forward == "matching":  # the larger story gets its 4 confirmations
        assert len(shares["b"]) == 4 and not shares["s"]
    if len(shares["b"]) >= 4:  # it may strip the self-mask, but the pairwise masks remain
        seed = shamir_combine(shares["b"])
        without_self_mask = masked[VICTIM] - prg(seed, len(masked[VICTIM]))
        assert np.median(np.abs(decode_fixed(without_self_mask, 24))) > 1e9


def test_a_client_refuses_to_unmask_without_enough_neighbours_confirming_its_set():
    clients = devices()
    keys = advertise(clients, threshold=4)
    share_and_mask(clients, keys)
    signatures = {
        u: unpack(d.answer("consistency", ROUND, pack({"survivors": IDS})), "s")[0]["signature"]
        for u, d in clients.items()
    }
    # every client signed c7 live; the server now tells c5 that c7 dropped (to get a share
    # of c7's mask key besides the self-mask shares the others give: both kinds unmask
    # c7's update), or tells c6 of a c8: a request must name exactly the set it signed
    for asked, told in (("c5", IDS[:-1]), ("c6", [*IDS, "c8"])):
        request = pack({"survivors": told, "signatures": signatures})
        with pytest.raises(SecAggError, match="names another survivor set than the one"):
            clients[asked].answer("unmask", ROUND, request)
    few = {u: signatures[u] for u in IDS[:3]}  # c1 and c2 are c0's only confirmations
    with pytest.raises(SecAggError, match="only 2 neighbours confirmed the survivor set"):
        clients[VICTIM].answer("unmask", ROUND, pack({"survivors": IDS, "signatures": few}))
    # a second consistency request for another set is refused: a client signs once
    with pytest.raises(SecAggError, match="already signed a survivor set"):
        clients["c1"].answer("consistency", ROUND, pack({"survivors": IDS[1:]}))
    # a refusal ends the client's round: the server gets no second try
    with pytest.raises(SecAggError, match="before advertise"):
        clients[VICTIM].answer("unmask", ROUND, pack({"survivors": IDS, "signatures": signatures}))
    # with every confirmation, the honest path reveals self-mask shares only
    reply = clients["c3"].answer(
        "unmask", ROUND, pack({"survivors": IDS, "signatures": signatures})
    )
    assert {kind for _, _, kind in unpack(reply, "u")[0]["shares"].values()} == {"b"}


def test_keys_the_server_slips_in_for_a_client_are_refused():
    clients = devices()
    keys = advertise(clients, threshold=4)
    # the server's own round keys in place of c1's, signed by a key c1 does not own
    forger = Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    cipher = X25519PrivateKey.generate().public_key().public_bytes(*raw)
    mask = X25519PrivateKey.generate().public_key().public_bytes(*raw)
    forged = {
        "cipher_key": cipher.hex(), "mask_key": mask.hex(),
        "signature": forger.sign(advertised(ROUND, "c1", cipher, mask)).hex(),
    }  # fmt: skip
    request = pack({"keys": {**{v: keys[v] for v in IDS if v != VICTIM}, "c1": forged}})
    with pytest.raises(SecAggError, match=r"keys of 'c1'.*not signed by 'c1'"):
        clients[VICTIM].answer("share", ROUND, request)
    # and a client with no identity takes no part at all
    bare = SecureDevice("c9")
    with pytest.raises(SecAggError, match="needs this client's identity key and the roster"):
        bare.answer("advertise", ROUND, pack({"threshold": 4, "fraction_bits": 24,
                                               "max_abs": 1.0, "neighbours": IDS}))  # fmt: skip


# -- homomorphic encryption: the key holder is not a decryption oracle ---------------------


def he_devices(config):
    """Four client devices under HE; c0 holds the key. Each encrypts ones × (index + 1)."""
    clients = devices()
    holder = clients["c0"]
    settings = config_header(config, 4)
    public = holder.answer("keys", ROUND, pack(settings))
    header = {**settings, "fingerprint": fingerprint(public)}
    sent = {
        u: unpack(clients[u].answer("encrypt", ROUND, pack(header, public)), "ciphertexts")
        for u in IDS[:4]
    }
    return holder, header, sent


def decrypt_request(header, sent, claimed):
    """A decrypt request carrying ``claimed``: reported client → the client whose
    ciphertexts and signature are sent under that name."""
    contributions = {
        name: {"sha256": sent[real][0]["sha256"], "extras": sent[real][0]["extras"],
               "signature": sent[real][0]["signature"]}
        for name, real in claimed.items()
    }  # fmt: skip
    blob = join_ciphertexts(
        [c for name in sorted(claimed) for c in split_ciphertexts(sent[claimed[name]][1], "c")]
    )
    return pack({**header, "length": 6, "contributions": contributions}, blob)


@pytest.mark.parametrize("config", [PaillierConfig(key_bits=2048), CKKSConfig("n8192")])
def test_the_key_holder_decrypts_only_a_signed_sum_of_several_clients_once(config):
    holder, header, sent = he_devices(config)
    # one client's ciphertext sent as "the aggregate"
    with pytest.raises(SecAggError, match="at least 2 clients' signed contributions"):
        holder.answer("decrypt", ROUND, decrypt_request(header, sent, {"c1": "c1"}))
    # the same client under two names, or the server's own ciphertext as a second client
    with pytest.raises(SecAggError, match=r"'c2'.*not signed by 'c2'"):
        holder.answer("decrypt", ROUND, decrypt_request(header, sent, {"c1": "c1", "c2": "c1"}))
    # an honest sum of three clients is decrypted, once a round
    honest = decrypt_request(header, sent, {"c1": "c1", "c2": "c2", "c3": "c3"})
    values = np.frombuffer(holder.answer("decrypt", ROUND, honest), dtype="<f8")
    expected = np.array([2 + 3 + 4] * 5 + [3.0])  # Σ weight·payload (w = 1), then Σ weight
    flood = config.flood_sigma if isinstance(config, CKKSConfig) else 0.0
    np.testing.assert_allclose(values, expected, atol=max(6 * flood, 1e-4))
    with pytest.raises(SecAggError, match="round 1 was decrypted already"):
        holder.answer("decrypt", ROUND, decrypt_request(header, sent, {"c1": "c1", "c2": "c2"}))


def test_paillier_keys_default_to_128_bit_security():
    assert PaillierConfig().key_bits == 3072
    with pytest.raises(ConfigError, match="paillier_key_bits=1024 is invalid"):
        PaillierConfig(key_bits=1024)


def test_a_malformed_consistency_request_is_refused_and_named():
    clients = devices()
    share_and_mask(clients, advertise(clients, threshold=4))
    with pytest.raises(SecAggError, match=r"^consistency request: truncated message of 2 bytes$"):
        clients["c1"].answer("consistency", ROUND, b"{}")
    with pytest.raises(SecAggError, match=r"^consistency request: survivors must be a list of"):
        clients["c2"].answer("consistency", ROUND, pack({"survivors": "c0,c1"}))


def test_a_held_update_goes_into_one_sum_only_and_never_into_an_earlier_rounds():
    # an asynchronous run sums an update trained for an earlier model version in a later
    # step's protocol; a server may not have it put into the sum of an earlier round, nor
    # into two sums
    device = devices()["c1"]  # holds its update of round ROUND
    identity = device.identity
    later = ROUND + 3
    request = pack(
        {"threshold": 4, "fraction_bits": 24, "max_abs": 2.0**20,
         "neighbours": [v for v in IDS if v != "c1"]}
    )  # fmt: skip
    earlier = SecureDevice("c1", identity)
    earlier.hold(ClientUpdate("c1", later, Params({"w": np.ones(5)}), 1.0))
    earlier.answer("advertise", ROUND, request)
    with pytest.raises(SecAggError, match=rf"^mask request: no update held for round {ROUND}$"):
        earlier.answer("mask", ROUND, pack({"shares": {}}))
    # a later step takes the held update once; asking again finds nothing held
    clients = devices()
    keys = advertise(clients, threshold=4, round_number=later)
    masked = share_and_mask(clients, keys, later)
    assert set(masked) == set(IDS)
    with pytest.raises(SecAggError, match=rf"^mask request: no update held for round {later}$"):
        clients["c1"].answer("mask", later, pack({"shares": {}}))
