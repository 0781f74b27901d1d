"""What homomorphic encryption costs against the plain sum: 10 clients × 10k, 100k and 1M
parameters, in one run.

For each size: the plain streaming sum (float32 updates, `PlainSum`), CKKS (TenSEAL, preset
n8192: 4,096 values per ciphertext) and Paillier (2048-bit, BatchCrypt packing of 16
fraction bits in slots wide enough for 10 clients). Timed are the client's encryption
(mean per client), the server's sum of all ciphertexts, and the key holder's decryption
of the aggregate. Bytes are one client's upload; the expansion is those bytes over the
float32 update's. Paillier at 1M encrypts one client (about 3 min) and sums that client's
ciphertexts 10 times: the server's cost per ciphertext does not depend on which client
sent it.

    python benchmarks/he_cost.py [--sizes 10000 100000 1000000] [--clients 10]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from fedstream.params import Params
from fedstream.secure.he import CKKS, CKKSConfig, Paillier, PaillierConfig
from fedstream.secure.plain import PlainSum


def plain(vectors: list[np.ndarray]) -> dict[str, float]:
    like = Params({"w": np.zeros(len(vectors[0]), np.float32)})
    started = time.perf_counter()
    total = PlainSum(like)
    for v in vectors:
        total.add(Params({"w": v.astype(np.float32)}), 1.0)
    total.result(1)
    return {
        "encrypt_s": 0.0,
        "server_s": time.perf_counter() - started,
        "decrypt_s": 0.0,
        "bytes_up": float(like.wire_size()),
        "max_error": 0.0,
    }


def encrypted(scheme: str, vectors: list[np.ndarray], reuse: bool) -> dict[str, float]:
    clients = len(vectors)
    if scheme == "ckks":
        holder: CKKS | Paillier = CKKS.generate(CKKSConfig("n8192"))
        server: CKKS | Paillier = CKKS.public(CKKSConfig("n8192"), holder.public_bytes())
    else:
        config = PaillierConfig(key_bits=2048)  # the figures in RESULTS.md; 3072 is the default
        holder = Paillier.generate(config)
        server = Paillier.public(config, holder.public_bytes())
        holder.clients = server.clients = clients
    sent: list[list[bytes]] = []
    started = time.perf_counter()
    for v in vectors[:1] if reuse else vectors:
        sender = (
            CKKS.public(CKKSConfig("n8192"), holder.public_bytes())
            if scheme == "ckks"
            else Paillier.public(config, holder.public_bytes())
        )
        if isinstance(sender, Paillier):
            sender.clients = clients
        sent.append(sender.encrypt(v))
    encrypt_s = (time.perf_counter() - started) / len(sent)
    started = time.perf_counter()
    total = None
    for k in range(clients):
        ciphertexts = sent[0 if reuse else k]
        total = server.add(total, [server.load(c, "c") for c in ciphertexts])
    dumped = server.dump(total)  # type: ignore[arg-type]
    server_s = time.perf_counter() - started
    started = time.perf_counter()
    if isinstance(holder, Paillier):
        result = holder.decrypt_sum(dumped, len(vectors[0]), clients)
    else:
        result = holder.decrypt(dumped, len(vectors[0]))
    decrypt_s = time.perf_counter() - started
    expected = vectors[0] * clients if reuse else np.sum(vectors, axis=0)
    return {
        "encrypt_s": encrypt_s,
        "server_s": server_s,
        "decrypt_s": decrypt_s,
        "bytes_up": float(sum(len(c) for c in sent[0])),
        "max_error": float(np.max(np.abs(result - expected))),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        rng = np.random.default_rng(size)
        vectors = [rng.normal(0, 0.05, size) for _ in range(args.clients)]
        for scheme in ("plain", "ckks", "paillier"):
            measured = (
                plain(vectors)
                if scheme == "plain"
                else encrypted(scheme, vectors, reuse=scheme == "paillier" and size >= 1_000_000)
            )
            row: dict[str, Any] = {
                "params": size,
                "scheme": scheme,
                **measured,
                "expansion": measured["bytes_up"] / (4 * size),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"{'params':>9} {'scheme':>9} {'encrypt s':>10} {'server s':>9} {'decrypt s':>10} "
          f"{'MB up':>8} {'×':>6} {'max error':>10}")  # fmt: skip
    for r in rows:
        print(f"{r['params']:>9,} {r['scheme']:>9} {r['encrypt_s']:>10.3f} {r['server_s']:>9.3f} "
              f"{r['decrypt_s']:>10.3f} {r['bytes_up'] / 1e6:>8.2f} {r['expansion']:>6.1f} "
              f"{r['max_error']:>10.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
