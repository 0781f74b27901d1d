"""Homomorphic-encryption secure sums: CKKS (Microsoft SEAL through TenSEAL) and Paillier
(python-paillier with gmpy2).

One round, over the transport's ``exchange``:

1. **keys**: the key holder (a client) makes its key pair once and sends only public
   material: a CKKS context without its secret key (and without relinearisation or Galois
   keys, which a sum does not need and which cost hundreds of kB to MB), or a Paillier
   public key. Its SHA-256 is the key's fingerprint.
2. **encrypt**: every client encrypts its vector (``session.update_vector``) under that
   key and sends the ciphertexts, with the key's fingerprint and the SHA-256 of each
   ciphertext.
3. The server checks each client's message (right key, right number of ciphertexts, intact,
   parseable) and adds the ciphertexts it accepts. It cannot decrypt anything: it has no
   secret key.
4. **decrypt**: the server sends the key holder every included client's ciphertexts with
   their signed hashes. The key holder decrypts only a sum it made itself: it checks each
   client's signature (``secagg.Identity``: every client signs its ciphertexts' SHA-256
   with its identity key) and that at least ``MIN_CONTRIBUTORS`` distinct clients are in
   it. It adds their ciphertexts, decrypts the total, and does this once a round. So a
   server that sends one client's ciphertext as "the aggregate", or the same round twice
   with different subsets to difference them, gets nothing decrypted.
5. CKKS decryption leaks its error, and from enough decryptions the secret key (Li and
   Micciancio 2021). The key holder adds Gaussian noise from the OS CSPRNG to what it
   returns (noise flooding), with σ = 2^flood_bits times the preset's measured decryption
   error: 2^20 by default, about 0.03 per slot of the sum at n8192.

The key holder sees the sum, which the server learns anyway. Threshold decryption among
several key holders would remove the trust that it does not collude with the server, and
is not implemented.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fedstream import checks
from fedstream.errors import ConfigError
from fedstream.privacy.mechanisms import SecureGenerator
from fedstream.secure.secagg import Identity, SecAggError, hex_field, pack, unpack

Floats = npt.NDArray[np.float64]


MIN_CONTRIBUTORS = 2
"""The fewest distinct signed contributions a key holder decrypts a sum of."""


@dataclass(frozen=True)
class CKKSPreset:
    """CKKS parameters. ``security`` is the level the HE standard (homomorphicencryption.org,
    2018) gives for this ring degree and total modulus size. ``error`` is the largest
    absolute decryption error of one slot measured for a sum of 10 vectors
    (docs/privacy.md, "CKKS presets")."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    security: str
    error: float = 0.0

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2


CKKS_PRESETS: dict[str, CKKSPreset] = {
    "n4096": CKKSPreset(
        4096, (40, 20, 40), 20, "128-bit (100 of at most 109 modulus bits)", 1.2e-2
    ),
    "n8192": CKKSPreset(
        8192, (60, 40, 40, 60), 40, "128-bit (200 of at most 218 modulus bits)", 2.8e-8
    ),
    "n16384": CKKSPreset(
        16384, (60, 50, 50, 50, 60), 50, "128-bit (270 of at most 438 modulus bits)", 5.4e-11
    ),
}


@dataclass(frozen=True)
class CKKSConfig:
    """Secure sums with CKKS. ``preset`` names one of ``CKKS_PRESETS``; ``flood_bits`` sets
    the noise flooding of decryptions (module docstring; 0 turns it off)."""

    scheme: ClassVar[str] = "ckks"
    preset: str = "n8192"
    flood_bits: int = 20

    def __post_init__(self) -> None:
        checks.one_of("he_preset", self.preset, list(CKKS_PRESETS))
        checks.non_negative_int("secure.he_flood_bits", self.flood_bits)

    @property
    def flood_sigma(self) -> float:
        """The standard deviation of the noise the key holder adds to each decrypted slot."""
        return float(2.0**self.flood_bits * CKKS_PRESETS[self.preset].error)


@dataclass(frozen=True)
class PaillierConfig:
    """Secure sums with Paillier. Each value is encoded in fixed point with
    ``fraction_bits``, shifted by ``max_abs`` to be non-negative, and packed with others into
    one plaintext in slots wide enough that the sum over all clients cannot carry from one
    slot into the next (BatchCrypt, Zhang et al. 2020). Integer sums are exact; the only
    error is the rounding to 2^-fraction_bits."""

    scheme: ClassVar[str] = "paillier"
    key_bits: int = 3072
    fraction_bits: int = 16
    max_abs: float = 2.0**16

    def __post_init__(self) -> None:
        if self.key_bits not in (2048, 3072, 4096):
            raise ConfigError(
                "paillier_key_bits",
                self.key_bits,
                "2048, 3072 or 4096 (3072 gives 128 bits of security, 2048 only 112)",
            )
        checks.positive_int("paillier_fraction_bits", self.fraction_bits)
        checks.positive("paillier_max_abs", self.max_abs)

    def slot_bits(self, clients: int) -> int:
        """Bits per packed value so that ``clients`` of them sum without a carry."""
        offset_bits = self.fraction_bits + math.ceil(math.log2(self.max_abs)) + 1
        return offset_bits + max(1, math.ceil(math.log2(max(clients, 2)))) + 1

    def per_plaintext(self, clients: int) -> int:
        count = (self.key_bits - 2) // self.slot_bits(clients)
        if count < 1:
            raise ConfigError(
                "paillier_key_bits", self.key_bits, "large enough for one packed value"
            )
        return count


HEConfig = CKKSConfig | PaillierConfig


def fingerprint(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()


# -- ciphertext lists as bytes ------------------------------------------------------------


def join_ciphertexts(items: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<Q", len(c)) + c for c in items)


def split_ciphertexts(blob: bytes, what: str) -> list[bytes]:
    out, at = [], 0
    while at < len(blob):
        if at + 8 > len(blob):
            raise SecAggError(f"{what}: truncated ciphertext list")
        (size,) = struct.unpack_from("<Q", blob, at)
        at += 8
        if at + size > len(blob):
            raise SecAggError(
                f"{what}: ciphertext of {size} bytes overruns the message (truncated)"
            )
        out.append(blob[at : at + size])
        at += size
    return out


# -- CKKS ----------------------------------------------------------------------------------


class CKKS:
    """TenSEAL's CKKS, holding either a full context (key holder) or a public one."""

    def __init__(self, config: CKKSConfig, context: Any) -> None:
        self.config = config
        self.context = context

    @classmethod
    def generate(cls, config: CKKSConfig) -> CKKS:
        import tenseal as ts

        preset = CKKS_PRESETS[config.preset]
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=preset.poly_modulus_degree,
            coeff_mod_bit_sizes=list(preset.coeff_mod_bit_sizes),
        )
        context.global_scale = 2.0**preset.scale_bits
        return cls(config, context)

    @classmethod
    def public(cls, config: CKKSConfig, public: bytes) -> CKKS:
        import tenseal as ts

        try:
            context = ts.context_from(public)
        except ValueError as exc:
            raise SecAggError(f"public CKKS context does not parse ({exc})") from None
        if context.has_secret_key():
            raise SecAggError("the 'public' CKKS context holds a secret key")
        return cls(config, context)

    def public_bytes(self) -> bytes:
        return bytes(
            self.context.serialize(
                save_public_key=True,
                save_secret_key=False,
                save_galois_keys=False,
                save_relin_keys=False,
            )
        )

    def encrypt(self, values: Floats) -> list[bytes]:
        import tenseal as ts

        slots = CKKS_PRESETS[self.config.preset].slots
        return [
            bytes(ts.ckks_vector(self.context, values[i : i + slots].tolist()).serialize())
            for i in range(0, len(values), slots)
        ]

    def count(self, length: int) -> int:
        return math.ceil(length / CKKS_PRESETS[self.config.preset].slots)

    def load(self, ciphertext: bytes, what: str) -> Any:
        import tenseal as ts

        try:
            return ts.ckks_vector_from(self.context, ciphertext)
        except ValueError as exc:
            raise SecAggError(f"{what} does not parse as a CKKS ciphertext ({exc})") from None

    def add(self, total: list[Any] | None, ciphertexts: list[Any]) -> list[Any]:
        return (
            ciphertexts
            if total is None
            else [a + b for a, b in zip(total, ciphertexts, strict=True)]
        )

    def dump(self, total: list[Any]) -> list[bytes]:
        return [bytes(c.serialize()) for c in total]

    def decrypt(self, ciphertexts: list[bytes], length: int) -> Floats:
        values = [np.asarray(self.load(c, "aggregate").decrypt()) for c in ciphertexts]
        return np.concatenate(values)[:length].astype(np.float64)


# -- Paillier ------------------------------------------------------------------------------


class Paillier:
    """Paillier with BatchCrypt-style packing; ciphertexts are integers mod n²."""

    def __init__(self, config: PaillierConfig, public_key: Any, private_key: Any = None) -> None:
        self.config = config
        self.public_key = public_key
        self.private_key = private_key
        self.clients = 2

    @classmethod
    def generate(cls, config: PaillierConfig) -> Paillier:
        import phe

        public_key, private_key = phe.generate_paillier_keypair(n_length=config.key_bits)
        return cls(config, public_key, private_key)

    @classmethod
    def public(cls, config: PaillierConfig, public: bytes) -> Paillier:
        import phe

        try:
            n = int.from_bytes(public, "big")
        except ValueError:
            raise SecAggError("Paillier public key does not parse") from None
        if n.bit_length() < config.key_bits - 1:
            raise SecAggError(
                f"Paillier public key has {n.bit_length()} bits, expected {config.key_bits}"
            )
        return cls(config, phe.PaillierPublicKey(n))

    def public_bytes(self) -> bytes:
        n = int(self.public_key.n)
        return n.to_bytes((n.bit_length() + 7) // 8, "big")

    def _slots(self) -> tuple[int, int]:
        return self.config.slot_bits(self.clients), self.config.per_plaintext(self.clients)

    def count(self, length: int) -> int:
        return math.ceil(length / self._slots()[1])

    def encrypt(self, values: Floats) -> list[bytes]:
        cfg = self.config
        largest = float(np.max(np.abs(values))) if values.size else 0.0
        if not np.all(np.isfinite(values)) or largest > cfg.max_abs:
            raise SecAggError(
                f"values must be finite and at most paillier_max_abs={cfg.max_abs:g} in "
                f"magnitude; the largest is {largest:.6g}"
            )
        offset = int(cfg.max_abs * 2**cfg.fraction_bits)
        quantised = np.round(values * 2.0**cfg.fraction_bits).astype(np.int64) + offset
        bits, per = self._slots()
        size = (self.config.key_bits * 2 + 7) // 8
        out = []
        for start in range(0, len(quantised), per):
            packed = 0
            for q in reversed(quantised[start : start + per].tolist()):
                packed = (packed << bits) | int(q)
            ciphertext = int(self.public_key.raw_encrypt(packed))
            out.append(ciphertext.to_bytes(size, "big"))
        return out

    def load(self, ciphertext: bytes, what: str) -> int:
        value = int.from_bytes(ciphertext, "big")
        if not 0 < value < int(self.public_key.nsquare):
            raise SecAggError(f"{what} is not a Paillier ciphertext under this key")
        return value

    def add(self, total: list[int] | None, ciphertexts: list[int]) -> list[int]:
        if total is None:
            return ciphertexts
        n2 = int(self.public_key.nsquare)
        return [a * b % n2 for a, b in zip(total, ciphertexts, strict=True)]

    def dump(self, total: list[int]) -> list[bytes]:
        size = (self.config.key_bits * 2 + 7) // 8
        return [c.to_bytes(size, "big") for c in total]

    def decrypt_sum(self, ciphertexts: list[bytes], length: int, summed: int) -> Floats:
        """The packed sums of ``summed`` clients' values back to floats."""
        cfg = self.config
        bits, per = self._slots()
        mask = (1 << bits) - 1
        offset = int(cfg.max_abs * 2**cfg.fraction_bits)
        out: list[int] = []
        for c in ciphertexts:
            packed = int(self.private_key.raw_decrypt(self.load(c, "aggregate")))
            for _ in range(per):
                out.append((packed & mask) - summed * offset)
                packed >>= bits
        return np.asarray(out[:length], dtype=np.float64) / 2.0**cfg.fraction_bits


Backend = CKKS | Paillier


def make_backend(config: HEConfig, public: bytes | None = None) -> Backend:
    """A fresh key pair (``public=None``) or the public side of an existing one."""
    if isinstance(config, CKKSConfig):
        return CKKS.public(config, public) if public is not None else CKKS.generate(config)
    return Paillier.public(config, public) if public is not None else Paillier.generate(config)


def config_header(config: HEConfig, clients: int) -> dict[str, Any]:
    if isinstance(config, CKKSConfig):
        return {"scheme": "ckks", "preset": config.preset}
    return {
        "scheme": "paillier",
        "key_bits": config.key_bits,
        "fraction_bits": config.fraction_bits,
        "max_abs": config.max_abs,
        "clients": clients,
    }


def config_from_header(header: Mapping[str, Any]) -> tuple[HEConfig, int]:
    try:
        if header["scheme"] == "ckks":
            return CKKSConfig(preset=str(header["preset"])), 0
        if header["scheme"] == "paillier":
            config = PaillierConfig(
                int(header["key_bits"]), int(header["fraction_bits"]), float(header["max_abs"])
            )
            return config, int(header["clients"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SecAggError(f"HE settings are invalid ({exc})") from None
    raise SecAggError(f"unknown HE scheme {header.get('scheme')!r}")


def contribution_message(
    round_number: int, client_id: str, key: str, hashes: Sequence[str], extras: Sequence[str]
) -> bytes:
    """What a client signs about its ciphertexts: the round, itself, the key, their hashes
    and the names of its extras."""
    body = json.dumps([round_number, client_id, key, list(hashes), list(extras)]).encode()
    return b"fedstream he contribution|" + body


class DeviceHE:
    """A client's HE state: the key pair it made as key holder (kept across rounds), the
    rounds it has decrypted a sum for, and the answers to the three stages."""

    def __init__(self) -> None:
        self._keys: dict[tuple[Any, ...], Backend] = {}
        self._decrypted: set[int] = set()

    def keys(self, request: bytes) -> bytes:
        header, _ = unpack(request, "keys request")
        config, _ = config_from_header(header)
        key = tuple(sorted(config_header(config, 0).items()))
        if key not in self._keys:
            self._keys[key] = make_backend(config)
        return self._keys[key].public_bytes()

    def encrypt(
        self,
        request: bytes,
        vector: Floats,
        extras: Sequence[str],
        round_number: int,
        identity: Identity,
    ) -> bytes:
        header, public = unpack(request, "encrypt request")
        config, clients = config_from_header(header)
        if fingerprint(public) != header.get("fingerprint"):
            raise SecAggError("encrypt request: the public key does not match its fingerprint")
        backend = make_backend(config, public)
        if isinstance(backend, Paillier):
            backend.clients = clients
        ciphertexts = backend.encrypt(vector)
        hashes = [hashlib.sha256(c).hexdigest() for c in ciphertexts]
        message = contribution_message(
            round_number, identity.client_id, fingerprint(public), hashes, extras
        )
        return pack(
            {
                "fingerprint": fingerprint(public),
                "extras": list(extras),
                "sha256": hashes,
                "signature": identity.sign(message).hex(),
            },
            join_ciphertexts(ciphertexts),
        )

    def decrypt(self, request: bytes, round_number: int, identity: Identity) -> bytes:
        """Decrypt the sum of the signed contributions the request carries, once a round,
        and only of at least ``MIN_CONTRIBUTORS`` distinct clients (module docstring)."""
        header, blob = unpack(request, "decrypt request")
        config, clients = config_from_header(header)
        key = tuple(sorted(config_header(config, 0).items()))
        backend = self._keys.get(key)
        held = fingerprint(backend.public_bytes()) if backend is not None else None
        if backend is None or held is None or held != header.get("fingerprint"):
            raise SecAggError("decrypt request: this client holds no such key")
        if round_number in self._decrypted:
            raise SecAggError(f"decrypt request: round {round_number} was decrypted already")
        contributions = header.get("contributions")
        if not isinstance(contributions, dict) or len(contributions) < MIN_CONTRIBUTORS:
            raise SecAggError(
                f"decrypt request: a sum of at least {MIN_CONTRIBUTORS} clients' signed "
                "contributions is decrypted, never fewer"
            )
        length = int(header["length"])
        items = split_ciphertexts(blob, "decrypt request")
        if isinstance(backend, Paillier):
            backend.clients = clients  # its packing depends on how many are summed
        per_client = backend.count(length)
        if len(items) != per_client * len(contributions):
            raise SecAggError(
                f"decrypt request: {len(items)} ciphertexts for {len(contributions)} clients "
                f"of {per_client}"
            )
        total: Any = None
        for k, (client_id, signed) in enumerate(sorted(contributions.items())):
            what = f"decrypt request, {client_id!r}'s ciphertexts"
            own = items[k * per_client : (k + 1) * per_client]
            hashes = [hashlib.sha256(c).hexdigest() for c in own]
            if not isinstance(signed, dict) or signed.get("sha256") != hashes:
                raise SecAggError(f"{what}: they do not match the hashes they came with")
            message = contribution_message(
                round_number, client_id, held, hashes, list(signed.get("extras", []))
            )
            identity.verify(client_id, hex_field(signed, "signature", 64, what), message, what)
            loaded = [backend.load(c, what) for c in own]
            total = backend.add(total, loaded)
        self._decrypted.add(round_number)
        summed = backend.dump(total)
        if isinstance(backend, Paillier):
            values = backend.decrypt_sum(summed, length, len(contributions))
        else:
            values = backend.decrypt(summed, length)
            if isinstance(config, CKKSConfig) and config.flood_bits > 0:
                values = values + SecureGenerator().normal(0.0, config.flood_sigma, values.shape)
        return values.astype("<f8").tobytes()
