"""The server's side of one SecAgg+ round, over any transport's ``exchange`` call.

Clients train first and keep their update; then four exchanges (advertise, share, mask,
unmask) produce Σ weight·payload, Σ weight and Σ extras as a ``WeightedSum``. Each
client's vector is laid out by :func:`update_vector`: the flat weight·payload in float64,
then the weight, then the extras in name order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from fedstream.errors import ClientFailure, RoundFailedError
from fedstream.params import Params
from fedstream.secure.he import (
    DeviceHE,
    HEConfig,
    Paillier,
    config_header,
    fingerprint,
    join_ciphertexts,
    make_backend,
    split_ciphertexts,
)
from fedstream.secure.secagg import (
    Identity,
    SecAggClient,
    SecAggConfig,
    SecAggError,
    decode_fixed,
    hex_field,
    neighbour_graph,
    pack,
    unmask_sum,
    unpack,
)
from fedstream.types import ClientUpdate, WeightedSum

STAGES = ("advertise", "share", "mask", "consistency", "unmask", "keys", "encrypt", "decrypt")
"""Every secure-sum stage: SecAgg+'s five (with the consistency check), then the HE sum's
three."""

Answer = tuple[str, bytes | ClientFailure]


class Exchanger(Protocol):
    """What secure aggregation needs from a transport: send each client a request for a
    named stage and stream back its answer (or failure), with the bytes each way."""

    def exchange(
        self, stage: str, round_number: int, requests: Mapping[str, bytes]
    ) -> Iterator[tuple[str, bytes | ClientFailure]]: ...


def update_vector(update: ClientUpdate) -> tuple[npt.NDArray[np.float64], list[str]]:
    """The vector a client feeds to the secure sum, and the names of its extras."""
    names = sorted(update.extras)
    vector = np.concatenate(
        [
            update.payload.flat(np.float64) * update.weight,
            [update.weight],
            [float(update.extras[k]) for k in names],
        ]
    )
    return vector, names


class SecureDevice:
    """The client's side of a secure sum, as it runs on the device: it holds the update
    back at training time, then answers each stage of SecAgg+ or of an HE sum. Its HE key
    pair, if it is the key holder, lasts across rounds. SecAgg+ needs its ``identity``
    (``secagg.Identity``: its signing key and the roster of the others'), without which it
    refuses to take part; ``corrupt_fraction`` is what it assumes of its neighbours."""

    def __init__(
        self, client_id: str, identity: Identity | None = None, corrupt_fraction: float = 0.0
    ) -> None:
        self.client_id = client_id
        self.identity = identity
        self.corrupt_fraction = corrupt_fraction
        self._held: ClientUpdate | None = None
        self._protocol: SecAggClient | None = None
        self._he = DeviceHE()

    def _identity(self, stage: str) -> Identity:
        if self.identity is None:
            raise SecAggError(
                f"{stage} request: a secure sum needs this client's identity key and the "
                "roster of the others' (fedstream tokens writes them; fedstream client "
                "--identity), without which a lying server could impersonate its peers"
            )
        return self.identity

    def _take(self, round_number: int, stage: str) -> tuple[npt.NDArray[np.float64], list[str]]:
        """The held update, released once, into the sum of round (or server step)
        ``round_number``: one trained for it or, in an asynchronous run, for an earlier
        model version the server has moved on from; never one for a later round."""
        if self._held is None or self._held.round > round_number:
            raise SecAggError(f"{stage} request: no update held for round {round_number}")
        vector, names = update_vector(self._held)
        self._held = None
        return vector, names

    def hold(self, update: ClientUpdate) -> None:
        """Keep ``update`` (already clipped/noised by ``prepare_upload``) for the mask stage."""
        self._held = update

    def answer(self, stage: str, round_number: int, request: bytes) -> bytes:
        if stage == "keys":
            return self._he.keys(request)
        if stage in ("encrypt", "decrypt"):
            identity = self._identity(stage)
            if stage == "encrypt":
                vector, names = self._take(round_number, stage)
                return self._he.encrypt(request, vector, names, round_number, identity)
            return self._he.decrypt(request, round_number, identity)
        if stage == "advertise":
            header, _ = unpack(request, "advertise request")
            try:
                config = SecAggConfig(
                    fraction_bits=int(header["fraction_bits"]), max_abs=float(header["max_abs"])
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise SecAggError(f"advertise request: bad settings ({exc})") from None
            self._protocol = SecAggClient(
                self.client_id, round_number, config, self._identity(stage),
                self.corrupt_fraction,
            )  # fmt: skip
            return self._protocol.advertise(request)
        protocol = self._protocol
        if protocol is None or protocol.round != round_number:
            raise SecAggError(f"{stage} request for round {round_number} before advertise")
        if stage == "share":
            return protocol.share(request)
        if stage == "mask":
            return protocol.mask(request, *self._take(round_number, stage))
        if stage == "consistency":
            return protocol.consistency(request)
        if stage == "unmask":
            self._protocol = None
            return protocol.unmask(request)
        raise SecAggError(f"unknown secure-aggregation stage {stage!r}")


class _Exchanges:
    """One round's stages of a secure-sum protocol: each stage's answers, every client's
    failure, and the bytes each way."""

    def __init__(self, transport: Exchanger, round_number: int) -> None:
        self.transport = transport
        self.round_number = round_number
        self.failures: list[ClientFailure] = []
        self.down = self.up = 0

    def stage(self, name: str, requests: Mapping[str, bytes]) -> dict[str, bytes]:
        """Send every request of stage ``name``; the answers of those that answered."""
        answers: dict[str, bytes] = {}
        for client_id, answer in self.transport.exchange(name, self.round_number, requests):
            self.down += len(requests[client_id])
            if isinstance(answer, ClientFailure):
                self.failures.append(answer)
            else:
                self.up += len(answer)
                answers[client_id] = answer
        return answers


@dataclass(frozen=True)
class SecureSumResult:
    """The revealed sum, who is in it, who dropped at which stage, and the traffic."""

    aggregate: WeightedSum
    included: tuple[str, ...]
    failures: tuple[ClientFailure, ...]
    bytes_down: int
    bytes_up: int


def secure_sum(
    transport: Exchanger,
    round_number: int,
    participants: Sequence[str],
    like: Params,
    config: SecAggConfig,
    rng: np.random.Generator,
) -> SecureSumResult:
    """Run SecAgg+ among ``participants`` (who have trained and hold their updates)."""
    k, threshold = config.resolve(len(participants))
    graph = neighbour_graph(sorted(participants), k, rng)
    exchanges = _Exchanges(transport, round_number)
    failures, stage = exchanges.failures, exchanges.stage

    setup = {"threshold": threshold, "fraction_bits": config.fraction_bits}
    keys: dict[str, tuple[bytes, bytes]] = {}
    advertised = stage(
        "advertise",
        {
            u: pack({**setup, "max_abs": config.max_abs, "neighbours": list(graph[u])})
            for u in graph
        },
    )
    keys_signed: dict[str, bytes] = {}
    for u, message in advertised.items():
        try:
            header, _ = unpack(message, f"keys from {u!r}")
            what = f"keys from {u!r}"
            keys[u] = (
                hex_field(header, "cipher_key", 32, what),
                hex_field(header, "mask_key", 32, what),
            )
            keys_signed[u] = hex_field(header, "signature", 64, what)
        except SecAggError as exc:
            keys.pop(u, None)
            failures.append(ClientFailure(u, "advertise", str(exc)))

    def public(u: str) -> dict[str, str]:
        return {
            "cipher_key": keys[u][0].hex(),
            "mask_key": keys[u][1].hex(),
            "signature": keys_signed[u].hex(),
        }

    shared = stage(
        "share",
        {u: pack({"keys": {v: public(v) for v in graph[u] if v in keys}}) for u in keys},
    )
    inbox: dict[str, dict[str, str]] = {u: {} for u in shared}
    for u, message in shared.items():
        try:
            header, _ = unpack(message, f"shares from {u!r}")
            sealed = header.get("shares")
            if not isinstance(sealed, dict) or set(sealed) != {v for v in graph[u] if v in keys}:
                raise SecAggError(f"shares from {u!r}: expected one per neighbour that advertised")
        except SecAggError as exc:
            failures.append(ClientFailure(u, "share", str(exc)))
            continue
        for v, ciphertext in sealed.items():
            if v in inbox:
                inbox[v][u] = str(ciphertext)
    # only shares from clients that completed the share stage are passed on
    refused = {f.client_id for f in failures if f.stage == "share"}
    complete = sorted(u for u in inbox if u not in refused)  # sorted: same order every run
    maskers = {u: sorted(v for v in inbox[u] if v in complete) for u in complete}
    masked_messages = stage(
        "mask", {u: pack({"shares": {v: inbox[u][v] for v in maskers[u]}}) for u in complete}
    )
    masked: dict[str, np.ndarray] = {}
    length = like.num_elements + 1
    extras_names: list[str] | None = None
    for u, message in masked_messages.items():
        try:
            header, blob = unpack(message, f"masked vector from {u!r}")
            names = header.get("extras")
            expected = length + len(names) if isinstance(names, list) else -1
            if not isinstance(names, list) or len(blob) != 8 * expected:
                raise SecAggError(
                    f"masked vector from {u!r}: {len(blob)} bytes, expected 8 × "
                    f"{expected if expected > 0 else '(parameters + 1 + extras)'}"
                )
            if extras_names is not None and names != extras_names:
                raise SecAggError(f"masked vector from {u!r}: extras {names} ≠ {extras_names}")
        except SecAggError as exc:
            failures.append(ClientFailure(u, "mask", str(exc)))
            continue
        extras_names = [str(n) for n in names]
        masked[u] = np.frombuffer(blob, dtype=np.uint64)
    if not masked:
        raise RoundFailedError(round_number, "no client completed secure aggregation", failures)
    live = sorted(masked)
    signed = stage("consistency", {v: pack({"survivors": live}) for v in live})
    signatures: dict[str, str] = {}
    for v, message in signed.items():
        try:
            header, _ = unpack(message, f"consistency signature from {v!r}")
            signatures[v] = hex_field(header, "signature", 64, "consistency signature").hex()
        except SecAggError as exc:
            failures.append(ClientFailure(v, "consistency", str(exc)))
    answers = stage(
        "unmask",
        {
            v: pack(
                {
                    "survivors": live,
                    "signatures": {w: signatures[w] for w in graph[v] if w in signatures},
                }
            )
            for v in signatures
        },
    )
    revealed: dict[str, dict[str, tuple[int, int, str]]] = {}
    for v, message in answers.items():
        try:
            header, _ = unpack(message, f"unmask shares from {v!r}")
            revealed[v] = {
                u: (int(x), int(y, 16), str(kind)) for u, (x, y, kind) in header["shares"].items()
            }
        except (SecAggError, KeyError, TypeError, ValueError) as exc:
            failures.append(ClientFailure(v, "unmask", f"malformed shares: {exc}"))
    try:
        total = unmask_sum(
            masked,
            revealed,
            {u: keys[u][1] for u in keys},
            maskers,
            threshold,
            length + len(extras_names or []),
        )
    except SecAggError as exc:
        raise RoundFailedError(round_number, f"secure aggregation: {exc}", failures) from None
    values = decode_fixed(total, config.fraction_bits)
    aggregate = _weighted_sum(values, like, len(masked), extras_names or [])
    return SecureSumResult(aggregate, tuple(live), tuple(failures), exchanges.down, exchanges.up)


def _weighted_sum(
    values: npt.NDArray[np.float64], like: Params, count: int, extras: Sequence[str]
) -> WeightedSum:
    """A decoded sum vector (``update_vector``'s layout) as a ``WeightedSum``."""
    size = like.num_elements
    return WeightedSum(
        total=Params.from_flat(values[:size], like),
        weight=float(values[size]),
        count=count,
        extras=dict(zip(extras, values[size + 1 :].tolist(), strict=True)),
    )


def he_sum(
    transport: Exchanger,
    round_number: int,
    participants: Sequence[str],
    like: Params,
    config: HEConfig,
    rng: np.random.Generator | None = None,
) -> SecureSumResult:
    """Sum the participants' updates under homomorphic encryption (``fedstream.secure.he``).
    The key holder is the first participant in sorted order; it keeps its key pair across
    the rounds in which it holds the key. It draws nothing from ``rng`` (taken so that
    every secure sum is called alike)."""
    exchanges = _Exchanges(transport, round_number)
    failures, stage = exchanges.failures, exchanges.stage
    ordered = sorted(participants)
    holder = ordered[0]
    settings = config_header(config, len(ordered))

    public = stage("keys", {holder: pack(settings)}).get(holder)
    if public is None:
        raise RoundFailedError(round_number, f"key holder {holder!r} gave no public key", failures)
    try:
        server_side = make_backend(config, public)  # public material only: cannot decrypt
    except SecAggError as exc:
        raise RoundFailedError(round_number, f"key holder {holder!r}: {exc}", failures) from None
    if isinstance(server_side, Paillier):
        server_side.clients = len(ordered)
    key = fingerprint(public)
    header = {**settings, "fingerprint": key}
    encrypted = stage("encrypt", {u: pack(header, public) for u in ordered})
    length = like.num_elements + 1
    included: list[str] = []
    names: list[str] | None = None
    signed: dict[str, dict[str, Any]] = {}
    ciphertexts: dict[str, list[bytes]] = {}
    for u in ordered:
        if u not in encrypted:
            continue
        what = f"ciphertexts from {u!r}"
        try:
            reply, blob = unpack(encrypted[u], what)
            extras = reply.get("extras")
            if reply.get("fingerprint") != key:
                raise SecAggError(f"{what} were made under another key")
            if not isinstance(extras, list) or (names is not None and extras != names):
                raise SecAggError(f"{what}: extras {extras} differ from the others' {names}")
            items = split_ciphertexts(blob, what)
            expected = server_side.count(length + len(extras))
            if len(items) != expected:
                raise SecAggError(f"{what}: {len(items)} ciphertexts, expected {expected}")
            hashes = reply.get("sha256")
            if (
                not isinstance(hashes, list)
                or [hashlib.sha256(c).hexdigest() for c in items] != hashes
            ):
                raise SecAggError(f"{what}: a ciphertext does not match its SHA-256 (tampered)")
            for i, c in enumerate(items):
                server_side.load(c, f"{what}, ciphertext {i}")
            signature = hex_field(reply, "signature", 64, what)
        except SecAggError as exc:
            failures.append(ClientFailure(u, "encrypt", str(exc)))
            continue
        included.append(u)
        names = [str(n) for n in extras]
        signed[u] = {"sha256": hashes, "extras": names, "signature": signature.hex()}
        ciphertexts[u] = items
    if not included or names is None:
        raise RoundFailedError(round_number, "no client's ciphertexts could be added", failures)
    # the key holder adds the signed ciphertexts itself, and decrypts only that sum
    request = pack(
        {**header, "length": length + len(names), "contributions": signed},
        join_ciphertexts([c for u in sorted(signed) for c in ciphertexts[u]]),
    )
    plain = stage("decrypt", {holder: request}).get(holder)
    if plain is None or len(plain) != 8 * (length + len(names)):
        raise RoundFailedError(
            round_number, f"key holder {holder!r} did not return the decrypted sum", failures
        )
    values = np.frombuffer(plain, dtype="<f8").astype(np.float64)
    aggregate = _weighted_sum(values, like, len(included), names)
    return SecureSumResult(
        aggregate, tuple(included), tuple(failures), exchanges.down, exchanges.up
    )
