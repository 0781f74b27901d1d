"""SecAgg+ identities for a deployment: provisioned keys, the roster, and the signatures a
client checks (a server that relays what a client did not sign is caught)."""

import pytest

from fedstream import ConfigError
from fedstream.secure.secagg import SecAggError, load_identity, make_identities


def test_provisioned_identities_sign_and_verify_each_other():
    private, public = make_identities(["a", "b"])
    assert set(private) == set(public) == {"a", "b"}
    assert len({*private.values(), *public.values()}) == 4  # fresh keys, none shared
    assert all(len(bytes.fromhex(k)) == 32 for k in [*private.values(), *public.values()])
    a, b = load_identity("a", private["a"], public), load_identity("b", private["b"], public)
    assert (a.client_id, b.client_id) == ("a", "b")
    b.verify("a", a.sign(b"keys"), b"keys", "round 1 keys")
    with pytest.raises(
        SecAggError,
        match=r"^round 1 keys: not signed by 'a' \(the server relayed something it did not "
        r"send\)$",
    ):
        b.verify("a", b.sign(b"keys"), b"keys", "round 1 keys")
    with pytest.raises(SecAggError, match=r"^shares: client 'z' is not in this client's roster$"):
        a.verify("z", a.sign(b"x"), b"x", "shares")


def test_a_key_that_is_not_this_clients_is_refused():
    private, public = make_identities(["a", "b"])
    with pytest.raises(
        ConfigError,
        match=r"^--identity='a' is invalid: expected a key whose public half is this "
        r"client's roster entry$",
    ):
        load_identity("a", private["b"], public)
    with pytest.raises(
        ConfigError, match=r"^--identity='a' is invalid: expected a hex Ed25519 key and roster"
    ):
        load_identity("a", "not hex", public)
