"""SecAgg+ (Bell et al. 2020, after Bonawitz et al. 2017): the server learns Σ of the
clients' vectors and nothing else, even when clients drop out at any stage.

Per round, over the sampled clients U₁ and a k-regular neighbour graph:

1. **advertise**: each client u makes two X25519 key pairs, (c_u, C_u) to encrypt shares and
   (s_u, S_u) to agree masks, and sends C_u, S_u.
2. **share**: u draws a self-mask seed b_u and splits b_u and s_u into Shamir shares with
   threshold t, one per neighbour. Each share pair goes to its neighbour v through the
   server, encrypted with AES-GCM under HKDF(X25519(c_u, C_v)). U₂ = clients that shared.
3. **mask**: u fixed-point encodes its vector x_u into Z_{2⁶⁴} and sends
   y_u = x_u + PRG(b_u) + Σ_{v ∈ N(u) ∩ U₂} ±PRG(HKDF(X25519(s_u, S_v))), with + when u < v
   and − otherwise, so each pair's masks cancel in the sum. U₃ = clients that masked.
4. **unmask**: each live client v reveals, for every neighbour u, a share of b_u if u ∈ U₃ or
   a share of s_u if u ∈ U₂ \\ U₃, never both for the same u.

The server reconstructs b_u for u ∈ U₃ and s_u for the dropped u ∈ U₂ \\ U₃. It then
subtracts the self-masks and the dropped clients' pairwise masks from Σ y_u, which leaves
Σ x_u over U₃ exactly (mod 2⁶⁴). Any secret it lacks t shares of fails the round with how
many were needed and how many there were.

Against a server that lies (Bonawitz et al. 2017, §4 "active adversaries"; Bell et al.
2020), four defences hold, each enforced by the client:

- **Authenticated keys.** Every client has a long-term Ed25519 identity key, and every
  client holds the roster of the others' public identity keys, provisioned out of band
  (the PKI these papers assume). A client signs its advertised keys, and refuses a
  neighbour's keys that the neighbour did not sign, so the server cannot slip in keys of
  its own and collect the shares meant for a neighbour.
- **Threshold above half.** A client refuses to share with a threshold t ≤ (k + c)/2,
  where k is its own number of neighbours and c = ⌈γ·k⌉ of them may collude with the
  server (γ = ``corrupt_fraction``). Every honest neighbour reveals at most one kind of
  share of a client, a share of its self-mask seed or of its mask key. The server would
  need t of each kind, 2t honest neighbours (less the colluders), and there are not so
  many. Whatever it tells whom, it cannot unmask one client's vector.
- **Consistency check.** After masking, each survivor signs the survivor set U₃ the
  server showed it. It reveals shares only when at least t of its neighbours signed the
  very same set. A signature over another set, or too few signatures, makes it refuse
  loudly: the round fails, naming the client.
- **One answer per round.** What it reveals for a neighbour u follows from the signed U₃
  alone (a self-mask share if u ∈ U₃, a mask-key share if not), once per round.

The masked arithmetic is in the ring Z_{2⁶⁴} (uint64 wrap-around), which Bonawitz et al.
allow (any Z_R). Shamir sharing is over the prime field GF(2⁵²¹ − 1), whose elements hold
the 32-byte secrets.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedstream import checks
from fedstream.errors import ConfigError, FedstreamError

FIELD_PRIME = 2**521 - 1
Vector = npt.NDArray[np.uint64]


class SecAggError(FedstreamError, ValueError):
    """A SecAgg+ message is malformed, of the wrong size, or fails authentication."""


# -- parameters ------------------------------------------------------------------------


@dataclass(frozen=True)
class SecAggConfig:
    """SecAgg+ settings.

    ``neighbours`` (k) is how many others each client shares its secrets with (``None``:
    min(clients − 1, 20); all others makes it Bonawitz et al.'s original SecAgg).
    ``threshold`` (t) is how many of a client's neighbours must stay to recover it
    (``None``: the smallest safe one, :func:`minimum_threshold`). ``corrupt_fraction``
    (γ) is the share of a client's neighbours assumed to collude with the server. A
    lying server then learns nothing beyond the sum while t > (k + ⌈γk⌉)/2 (module
    docstring), and a round survives up to k − t dropped neighbours per client.
    ``dropout_rate``, when given, is the rate at which clients drop: without an explicit k
    the fewest neighbours that survive it (:func:`choose_neighbours`; every other client
    when none does, as in a small round), and an explicit k that more neighbours would
    make survive it is refused. Values are encoded
    in fixed point with ``fraction_bits``; each must be at most ``max_abs`` in magnitude,
    and the sum over all clients must stay below 2⁶³.
    """

    scheme: ClassVar[str] = "secagg+"
    neighbours: int | None = None
    threshold: int | None = None
    fraction_bits: int = 24
    max_abs: float = 2.0**20
    corrupt_fraction: float = 0.0
    dropout_rate: float | None = None

    def __post_init__(self) -> None:
        if self.neighbours is not None:
            checks.positive_int("secagg_neighbours", self.neighbours)
        if self.threshold is not None:
            checks.positive_int("secagg_threshold", self.threshold)
        checks.positive_int("secagg_fraction_bits", self.fraction_bits)
        checks.in_unit_interval(
            "secure.corrupt_fraction", self.corrupt_fraction, include_zero=True, include_one=False
        )
        if self.dropout_rate is not None:
            checks.in_unit_interval(
                "secure.dropout_rate", self.dropout_rate, include_zero=True, include_one=False
            )
        checks.positive("secagg_max_abs", self.max_abs)
        if self.fraction_bits + math.log2(self.max_abs) >= 62:
            raise ConfigError(
                "secagg_fraction_bits",
                self.fraction_bits,
                f"fraction_bits + log2(max_abs) < 62 (max_abs={self.max_abs:g})",
            )

    def resolve(self, clients: int) -> tuple[int, int]:
        """(k, t) for a round of ``clients`` participants; bad combinations are named."""
        if clients < 2:
            raise ConfigError("clients_per_round", clients, "at least 2 with secure aggregation")
        if self.neighbours is not None:
            k = self.neighbours
        elif self.dropout_rate is not None:
            k = choose_neighbours(clients, self.dropout_rate, self.corrupt_fraction)
        else:
            k = min(clients - 1, 20)
        if k > clients - 1:
            raise ConfigError(
                "secagg_neighbours", k, f"at most clients per round − 1 ({clients - 1})"
            )
        safe = minimum_threshold(k, self.corrupt_fraction)
        if safe > k:
            raise ConfigError(
                "secure.corrupt_fraction",
                self.corrupt_fraction,
                f"small enough that a safe threshold fits {k} neighbours (it needs {safe})",
            )
        t = self.threshold if self.threshold is not None else safe
        if t > k:
            raise ConfigError(
                "secagg_threshold", t, f"at most the number of neighbours secagg_neighbours={k}"
            )
        if t < safe:
            raise ConfigError(
                "secagg_threshold",
                t,
                f"at least {safe} with {k} neighbours and corrupt_fraction="
                f"{self.corrupt_fraction:g}: below it a server that lies about who dropped "
                "can collect both kinds of share of one client and unmask its update",
            )
        if self.dropout_rate is not None and self.neighbours is not None:
            risk = round_failure_chance(clients, k, t, self.dropout_rate)
            better = choose_neighbours(clients, self.dropout_rate, self.corrupt_fraction)
            if risk > FAILURE_TARGET and better > k:
                raise ConfigError(
                    "secure.dropout_rate",
                    self.dropout_rate,
                    f"a rate {k} neighbours with threshold {t} survive: at this rate some "
                    f"client loses more than {k - t} of its neighbours with probability "
                    f"{risk:.2g} a round; secure.neighbours={better} (or none, to choose it) "
                    "would survive it",
                )
        headroom = 2.0**63 / (2.0**self.fraction_bits * self.max_abs)
        if clients > headroom:
            raise ConfigError(
                "secagg_max_abs",
                self.max_abs,
                f"small enough that {clients} clients' sum fits in 63 bits",
            )
        return k, t


FAILURE_TARGET = 1e-6
"""The chance per round that dropouts leave some client short of t neighbours, at most."""


def round_failure_chance(clients: int, neighbours: int, threshold: int, dropout: float) -> float:
    """A union bound on the chance that, with each client dropping independently at rate
    ``dropout``, some client keeps fewer than ``threshold`` of its ``neighbours``."""
    from scipy.stats import binom  # a second's import that most processes never need

    short = float(binom.cdf(threshold - 1, neighbours, 1 - dropout))
    return min(1.0, clients * short)


def choose_neighbours(clients: int, dropout: float, corrupt_fraction: float) -> int:
    """The fewest neighbours k (so the least work: cost grows with k) whose safe threshold
    a round survives at ``dropout`` with failure chance at most ``FAILURE_TARGET``, as
    Bell et al. size their graphs; every other client if none smaller does."""
    for k in range(1, clients - 1):
        t = minimum_threshold(k, corrupt_fraction)
        if t <= k and round_failure_chance(clients, k, t, dropout) <= FAILURE_TARGET:
            return k
    return clients - 1


def minimum_threshold(neighbours: int, corrupt_fraction: float) -> int:
    """The smallest threshold t a client accepts with k = ``neighbours``: the least t with
    2t > k + ⌈γk⌉, so that its honest neighbours, each revealing one kind of share of it,
    can never hand the server t shares of both kinds. It may exceed k when γ is large:
    then no threshold is safe."""
    colluders = math.ceil(corrupt_fraction * neighbours - 1e-9)
    return (neighbours + colluders) // 2 + 1


def neighbour_graph(
    client_ids: Sequence[str], k: int, rng: np.random.Generator
) -> dict[str, tuple[str, ...]]:
    """A k-regular undirected graph (k even, or k = n − 1): clients in a seeded random ring,
    each linked to the ⌊k/2⌋ nearest on either side; odd k < n − 1 adds the opposite
    client when n is even (a Harary graph). Symmetric: v ∈ N(u) ⇔ u ∈ N(v)."""
    n = len(client_ids)
    if k >= n - 1:
        return {u: tuple(v for v in client_ids if v != u) for u in client_ids}
    ring = [client_ids[int(i)] for i in rng.permutation(n)]
    links: dict[str, set[str]] = {u: set() for u in client_ids}
    for i, u in enumerate(ring):
        for step in range(1, k // 2 + 1):
            v = ring[(i + step) % n]
            links[u].add(v)
            links[v].add(u)
        if k % 2 == 1 and n % 2 == 0:
            v = ring[(i + n // 2) % n]
            links[u].add(v)
            links[v].add(u)
    return {u: tuple(sorted(links[u])) for u in client_ids}


# -- primitives (pure functions) ---------------------------------------------------------


def shamir_split(secret: bytes, count: int, threshold: int) -> list[tuple[int, int]]:
    """``count`` shares (x = 1 … count, y) of ``secret`` (≤ 64 bytes); any ``threshold`` of
    them recover it, fewer reveal nothing. Coefficients come from the OS CSPRNG."""
    value = int.from_bytes(secret, "big")
    if value >= FIELD_PRIME:
        raise SecAggError("secret too large for the Shamir field")
    coefficients = [value] + [
        int.from_bytes(os.urandom(66), "big") % FIELD_PRIME for _ in range(threshold - 1)
    ]
    shares = []
    for x in range(1, count + 1):
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % FIELD_PRIME
        shares.append((x, y))
    return shares


def shamir_combine(shares: Sequence[tuple[int, int]], length: int = 32) -> bytes:
    """The secret of ``length`` bytes from shares (x, y) by Lagrange interpolation at 0."""
    xs = [x for x, _ in shares]
    if len(set(xs)) != len(xs):
        raise SecAggError(f"duplicate share indices {sorted(xs)}")
    value = 0
    for i, (x_i, y_i) in enumerate(shares):
        numerator, denominator = 1, 1
        for j, (x_j, _) in enumerate(shares):
            if i != j:
                numerator = numerator * -x_j % FIELD_PRIME
                denominator = denominator * (x_i - x_j) % FIELD_PRIME
        value = (value + y_i * numerator * pow(denominator, -1, FIELD_PRIME)) % FIELD_PRIME
    if value >= 1 << (8 * length):
        raise SecAggError("the shares do not combine to a valid secret")
    return value.to_bytes(length, "big")


def prg(seed: bytes, length: int) -> Vector:
    """``length`` uniform uint64 words from a 32-byte seed: the ChaCha20 keystream."""
    stream = Cipher(algorithms.ChaCha20(seed, b"\0" * 16), mode=None).encryptor()
    return np.frombuffer(stream.update(bytes(8 * length)), dtype=np.uint64)


def agree(private: X25519PrivateKey, public: bytes, purpose: bytes) -> bytes:
    """A 32-byte key both ends derive: HKDF-SHA256 of the X25519 shared secret."""
    shared = private.exchange(X25519PublicKey.from_public_bytes(public))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(shared)


def encode_fixed(values: npt.NDArray[np.float64], fraction_bits: int, max_abs: float) -> Vector:
    """round(x·2^f) as two's-complement uint64; refuses NaN/Inf and |x| > ``max_abs``."""
    if not np.all(np.isfinite(values)):
        raise SecAggError("the vector to aggregate contains NaN or Inf")
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    if largest > max_abs:
        raise SecAggError(f"a value of magnitude {largest:.6g} exceeds secagg_max_abs={max_abs:g}")
    return np.round(values * 2.0**fraction_bits).astype(np.int64).view(np.uint64)


def decode_fixed(total: Vector, fraction_bits: int) -> npt.NDArray[np.float64]:
    """The signed fixed-point sum back to floats."""
    return total.view(np.int64).astype(np.float64) / 2.0**fraction_bits


def _public_bytes(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _private_bytes(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


# -- identities (the PKI against an active server) ----------------------------------------


class Roster(Protocol):
    """Every client's public Ed25519 identity key, as this client was given it out of band;
    ``None`` for a client it does not know."""

    def public_key(self, client_id: str) -> bytes | None: ...


@dataclass(frozen=True)
class KeyRoster:
    """A roster read from a provisioning file: client id → 32-byte public key."""

    keys: Mapping[str, bytes]

    def public_key(self, client_id: str) -> bytes | None:
        return self.keys.get(client_id)


@dataclass(frozen=True)
class DerivedRoster:
    """A simulation's roster: every simulated device's identity key is derived from the
    run's device secret (:func:`derived_identity_key`), so any process of the run can
    give any client's public key without a file."""

    secret: int

    def public_key(self, client_id: str) -> bytes:
        return _public_bytes(derived_identity_key(self.secret, client_id))


def derived_identity_key(secret: int, client_id: str) -> Ed25519PrivateKey:
    """A simulated device's identity key: a keyed hash (BLAKE2b) of its id."""
    seed = hashlib.blake2b(
        f"identity\x00{client_id}".encode(), key=secret.to_bytes(16, "little"), digest_size=32
    ).digest()
    return Ed25519PrivateKey.from_private_bytes(seed)


@dataclass(frozen=True)
class Identity:
    """This client's identity key and the roster it checks the others' signatures with."""

    client_id: str
    key: Ed25519PrivateKey
    roster: Roster

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    def verify(self, signer: str, signature: bytes, message: bytes, what: str) -> None:
        """Refuse, naming ``what``, unless ``signer`` signed ``message``."""
        public = self.roster.public_key(signer)
        if public is None:
            raise SecAggError(f"{what}: client {signer!r} is not in this client's roster")
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
        except (InvalidSignature, ValueError):
            raise SecAggError(
                f"{what}: not signed by {signer!r} (the server relayed something it did not send)"
            ) from None


def make_identities(client_ids: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Fresh identity keys for a deployment: (client id → private key hex, to give each
    client its own; client id → public key hex, the roster every client gets)."""
    private: dict[str, str] = {}
    public: dict[str, str] = {}
    for client_id in client_ids:
        key = Ed25519PrivateKey.generate()
        private[client_id] = _private_bytes(key).hex()
        public[client_id] = _public_bytes(key).hex()
    return private, public


def load_identity(client_id: str, private_hex: str, roster: Mapping[str, str]) -> Identity:
    """A deployed client's identity from its provisioned key and the roster (hex)."""
    try:
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private_hex))
        keys = {c: bytes.fromhex(k) for c, k in roster.items()}
    except ValueError as exc:
        raise ConfigError(
            "--identity", client_id, f"a hex Ed25519 key and roster ({exc})"
        ) from None
    if keys.get(client_id) != _public_bytes(key):
        raise ConfigError(
            "--identity", client_id, "a key whose public half is this client's roster entry"
        )
    return Identity(client_id, key, KeyRoster(keys))


def advertised(round_number: int, client_id: str, cipher_key: bytes, mask_key: bytes) -> bytes:
    """What a client signs when it advertises its round keys."""
    return b"|".join(
        [b"fedstream secagg keys", str(round_number).encode(), client_id.encode(),
         cipher_key, mask_key]
    )  # fmt: skip


def survivors_message(round_number: int, survivors: Sequence[str]) -> bytes:
    """What a client signs in the consistency check: the survivor set it was shown."""
    body = json.dumps(sorted(survivors), separators=(",", ":")).encode()
    return b"fedstream secagg survivors|" + str(round_number).encode() + b"|" + body


# -- message framing ----------------------------------------------------------------------


def pack(header: Mapping[str, Any], blob: bytes = b"") -> bytes:
    """A message: 4-byte header length, a JSON header (bytes as hex), then a raw blob."""
    raw = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<I", len(raw)) + raw + blob


def unpack(message: bytes, what: str) -> tuple[dict[str, Any], bytes]:
    if len(message) < 4:
        raise SecAggError(f"{what}: truncated message of {len(message)} bytes")
    (size,) = struct.unpack_from("<I", message)
    if 4 + size > len(message):
        raise SecAggError(
            f"{what}: header of {size} bytes overruns the {len(message)}-byte message"
        )
    try:
        header = json.loads(message[4 : 4 + size])
    except ValueError as exc:
        raise SecAggError(f"{what}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SecAggError(f"{what}: header is not an object")
    return header, message[4 + size :]


def hex_field(header: Mapping[str, Any], key: str, size: int, what: str) -> bytes:
    try:
        value = bytes.fromhex(str(header[key]))
    except (KeyError, ValueError):
        raise SecAggError(f"{what}: field {key!r} missing or not hex") from None
    if len(value) != size:
        raise SecAggError(f"{what}: field {key!r} has {len(value)} bytes, expected {size}")
    return value


# -- the client's side ----------------------------------------------------------------------


class SecAggClient:
    """One client's state for one round of SecAgg+. Its secrets never leave it except as
    encrypted shares and, at unmasking, the shares the protocol allows. ``identity`` signs
    what it sends and checks what the others signed; ``corrupt_fraction`` is the share of
    its neighbours it assumes may collude with the server (module docstring)."""

    def __init__(
        self,
        client_id: str,
        round_number: int,
        config: SecAggConfig,
        identity: Identity,
        corrupt_fraction: float = 0.0,
    ) -> None:
        self.client_id = client_id
        self.round = round_number
        self.config = config
        self.identity = identity
        self.corrupt_fraction = corrupt_fraction
        self._cipher_key = X25519PrivateKey.generate()
        self._mask_key = X25519PrivateKey.generate()
        self._self_seed = os.urandom(32)
        self.neighbours: tuple[str, ...] = ()
        self.threshold = 0
        self._keys: dict[str, tuple[bytes, bytes]] = {}  # neighbour → (C_v, S_v)
        self._held: dict[str, tuple[int, int, int]] = {}  # owner → (x, b share, s share)
        self._maskers: tuple[str, ...] = ()
        self._survivors: tuple[str, ...] | None = None  # the set this client signed

    def advertise(self, request: bytes) -> bytes:
        """Stage 1: learn the neighbours and threshold (refusing an unsafe one); answer
        with both public keys, signed."""
        header, _ = unpack(request, "advertise request")
        neighbours = header.get("neighbours")
        if not isinstance(neighbours, list) or self.client_id in neighbours:
            raise SecAggError("advertise request: neighbours must be a list of other clients")
        self.neighbours = tuple(str(v) for v in neighbours)
        self.threshold = int(header.get("threshold", 0))
        k = len(self.neighbours)
        if not 1 <= self.threshold <= k:
            raise SecAggError(
                f"advertise request: threshold={self.threshold} is invalid: expected 1 … "
                f"{k} (the number of neighbours)"
            )
        safe = minimum_threshold(k, self.corrupt_fraction)
        if self.threshold < safe:
            raise SecAggError(
                f"advertise request: threshold={self.threshold} is invalid: expected at least "
                f"{safe} with {k} neighbours (below it a lying server can collect both kinds "
                "of share of one client)"
            )
        cipher, mask = _public_bytes(self._cipher_key), _public_bytes(self._mask_key)
        signature = self.identity.sign(advertised(self.round, self.client_id, cipher, mask))
        return pack(
            {"cipher_key": cipher.hex(), "mask_key": mask.hex(), "signature": signature.hex()}
        )

    def share(self, request: bytes) -> bytes:
        """Stage 2: given the neighbours' public keys (each signed by its owner), encrypt
        one share pair for each."""
        header, _ = unpack(request, "share request")
        keys = header.get("keys")
        if not isinstance(keys, dict) or set(keys) - set(self.neighbours):
            raise SecAggError("share request: keys must be given for neighbours only")
        for v, pair in keys.items():
            what = f"share request, keys of {v!r}"
            cipher = hex_field(pair, "cipher_key", 32, what)
            mask = hex_field(pair, "mask_key", 32, what)
            signature = hex_field(pair, "signature", 64, what)
            self.identity.verify(v, signature, advertised(self.round, v, cipher, mask), what)
            self._keys[v] = (cipher, mask)
        if len(self._keys) < self.threshold:
            raise SecAggError(
                f"share request: {len(self._keys)} neighbours advertised keys, "
                f"the threshold is {self.threshold}"
            )
        holders = sorted(self._keys)
        b_shares = shamir_split(self._self_seed, len(holders), self.threshold)
        s_shares = shamir_split(_private_bytes(self._mask_key), len(holders), self.threshold)
        out = {}
        for v, (x, b_y), (_, s_y) in zip(holders, b_shares, s_shares, strict=True):
            plain = json.dumps({"x": x, "b": hex(b_y), "s": hex(s_y)}).encode()
            key = agree(self._cipher_key, self._keys[v][0], b"fedstream secagg share")
            nonce = os.urandom(12)
            sealed = AESGCM(key).encrypt(nonce, plain, self._aad(self.client_id, v))
            out[v] = (nonce + sealed).hex()
        return pack({"shares": out})

    def _aad(self, sender: str, receiver: str) -> bytes:
        return f"{self.round}|{sender}|{receiver}".encode()

    def mask(
        self, request: bytes, values: npt.NDArray[np.float64], extras: Sequence[str] = ()
    ) -> bytes:
        """Stage 3: store the shares sent to this client and send its vector, masked.
        ``extras`` names the vector's trailing entries (see ``session.update_vector``)."""
        header, _ = unpack(request, "mask request")
        shares = header.get("shares")
        if not isinstance(shares, dict) or set(shares) - set(self._keys):
            raise SecAggError("mask request: shares must come from neighbours that shared keys")
        for u, sealed_hex in shares.items():
            sealed = bytes.fromhex(str(sealed_hex))
            key = agree(self._cipher_key, self._keys[u][0], b"fedstream secagg share")
            try:
                plain = AESGCM(key).decrypt(sealed[:12], sealed[12:], self._aad(u, self.client_id))
            except InvalidTag:
                raise SecAggError(
                    f"mask request: the share from {u!r} fails authentication"
                ) from None
            body = json.loads(plain)
            self._held[u] = (int(body["x"]), int(body["b"], 16), int(body["s"], 16))
        self._maskers = tuple(sorted(shares))
        cfg = self.config
        masked = encode_fixed(values, cfg.fraction_bits, cfg.max_abs)
        masked = masked + prg(self._self_seed, len(values))
        for v in self._maskers:
            pairwise = prg(
                agree(self._mask_key, self._keys[v][1], b"fedstream secagg mask"), len(values)
            )
            masked = masked + pairwise if self.client_id < v else masked - pairwise
        return pack({"extras": list(extras)}, masked.tobytes())

    def consistency(self, request: bytes) -> bytes:
        """The consistency check: sign the survivor set U₃ the server shows, once."""
        header, _ = unpack(request, "consistency request")
        survivors = header.get("survivors")
        if not isinstance(survivors, list) or not all(isinstance(u, str) for u in survivors):
            raise SecAggError("consistency request: survivors must be a list of client ids")
        if self.client_id not in survivors:
            raise SecAggError("consistency request: this client masked, but is not a survivor")
        if self._survivors is not None:
            raise SecAggError("consistency request: this client already signed a survivor set")
        self._survivors = tuple(sorted(set(survivors)))
        signature = self.identity.sign(survivors_message(self.round, self._survivors))
        return pack({"signature": signature.hex()})

    def unmask(self, request: bytes) -> bytes:
        """Stage 4: once at least t neighbours have signed the same survivor set as this
        client, a share of b_u for each neighbour u in it, of s_u for each one not."""
        header, _ = unpack(request, "unmask request")
        survivors = self._survivors
        if survivors is None:
            raise SecAggError("unmask request before this client signed a survivor set")
        named = header.get("survivors")
        if not isinstance(named, list) or tuple(sorted(set(map(str, named)))) != survivors:
            raise SecAggError(
                "unmask request: it names another survivor set than the one this client signed"
            )
        signatures = header.get("signatures")
        if not isinstance(signatures, dict):
            raise SecAggError("unmask request: signatures must map client ids to signatures")
        message = survivors_message(self.round, survivors)
        confirmed = set()
        for signer, signature_hex in signatures.items():
            what = f"unmask request, {signer!r}'s survivor set"
            try:
                signature = bytes.fromhex(str(signature_hex))
            except ValueError:
                raise SecAggError(f"{what}: not hex") from None
            try:
                self.identity.verify(str(signer), signature, message, what)
            except SecAggError:
                raise SecAggError(
                    f"unmask request: {signer!r} did not sign the survivor set this client "
                    "saw; the server showed clients different sets, refusing to reveal shares"
                ) from None
            confirmed.add(str(signer))
        agreeing = len(confirmed & set(self.neighbours))
        if agreeing < self.threshold:
            raise SecAggError(
                f"unmask request: only {agreeing} neighbours confirmed the survivor set this "
                f"client saw, the threshold is {self.threshold}; refusing to reveal shares"
            )
        revealed = {}
        for u in sorted(self._held):
            x, b_y, s_y = self._held[u]
            live = u in survivors
            revealed[u] = [x, hex(b_y if live else s_y), "b" if live else "s"]
        return pack({"shares": revealed})


# -- the server's side ---------------------------------------------------------------------


def unmask_sum(
    masked: Mapping[str, Vector],
    revealed: Mapping[str, Mapping[str, tuple[int, int, str]]],
    mask_keys: Mapping[str, bytes],
    maskers: Mapping[str, Sequence[str]],
    threshold: int,
    length: int,
) -> Vector:
    """Σ x_u over the clients in ``masked`` (U₃), mod 2⁶⁴.

    ``revealed[v][u]`` is v's share (x, y, kind) for u, kind ``"b"`` or ``"s"``.
    ``mask_keys[v]`` is v's public mask key S_v. ``maskers[v]`` lists the neighbours v
    masked with (those whose shares the server passed to v). Raises ``SecAggError`` naming
    the secret that lacked shares and how many there were.
    """
    total = np.zeros(length, dtype=np.uint64)
    for y in masked.values():
        total += y

    def recover(u: str, kind: str) -> bytes:
        shares = [
            (x, y)
            for held in revealed.values()
            for o, (x, y, k) in held.items()
            if o == u and k == kind
        ]
        if len(shares) < threshold:
            what = "self-mask seed" if kind == "b" else "mask key"
            raise SecAggError(
                f"cannot recover client {u!r}'s {what}: needs {threshold} shares, "
                f"{len(shares)} of its neighbours remained"
            )
        return shamir_combine(shares[:threshold])

    for u in sorted(masked):
        total -= prg(recover(u, "b"), length)
    dropped = sorted({u for v in masked for u in maskers[v]} - set(masked))
    for u in dropped:
        secret = X25519PrivateKey.from_private_bytes(recover(u, "s"))
        for v in masked:
            if u in maskers[v]:
                pairwise = prg(agree(secret, mask_keys[v], b"fedstream secagg mask"), length)
                # v added +PRG(s_uv) when v < u and −PRG(s_uv) otherwise; undo it
                total = total - pairwise if v < u else total + pairwise
    return total
