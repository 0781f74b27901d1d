"""The whole HE secure sum as it now runs, with the checks against a lying server: 10
clients, each signing its ciphertexts; a key holder that receives every client's
ciphertexts, checks their signatures, adds them itself, decrypts once and (CKKS) floods
the result with noise. ``he_cost.py`` times the backends' operations alone; this times
``secure.session.he_sum`` over devices in this process (``secagg_cost.Devices``).

    python benchmarks/he_protocol.py [--clients 10] [--repeats 3]

Reported per run: the mean client CPU to encrypt and sign, the key holder's CPU for the
decrypt stage (verify, add, decrypt, flood), the server's own time (checking every
client's message), the bytes of the decrypt request (all clients' ciphertexts) against
one client's upload, and the largest error of the decrypted sum. Times are medians over
``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import numpy as np

from fedstream.params import Params
from fedstream.secure.he import CKKSConfig, HEConfig, PaillierConfig
from fedstream.secure.session import he_sum
from secagg_cost import Devices, random_updates

CASES: list[tuple[str, HEConfig, int]] = [
    ("ckks n8192", CKKSConfig("n8192"), 10_000),
    ("ckks n8192", CKKSConfig("n8192"), 100_000),
    ("paillier 3072", PaillierConfig(), 10_000),
    ("paillier 2048", PaillierConfig(key_bits=2048), 10_000),
]


def measure(config: HEConfig, length: int, clients: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    like = Params({"w": np.zeros(length, dtype=np.float32)})
    updates = random_updates(clients, length, 0.05, rng)
    devices = Devices(updates, set())
    started = time.perf_counter()
    result = he_sum(devices, 1, sorted(updates), like, config)
    total_s = time.perf_counter() - started
    expected = sum(u.payload.flat(np.float64) for u in updates.values())
    error = float(np.max(np.abs(result.aggregate.total.flat(np.float64) - expected)))
    upload = result.bytes_up / clients
    return {
        "encrypt_s_mean": devices.stage_cpu_s["encrypt"] / clients,
        "key_holder_decrypt_s": devices.stage_cpu_s["decrypt"],
        "key_holder_keys_s": devices.stage_cpu_s["keys"],
        "server_s": total_s - devices.client_cpu_s,
        "decrypt_request_bytes": float(devices.stage_bytes_down["decrypt"]),
        "upload_bytes_per_client": upload,
        "max_abs_error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for name, config, length in CASES:
        runs = [measure(config, length, args.clients, seed) for seed in range(args.repeats)]
        row: dict[str, Any] = {"scheme": name, "params": length, "clients": args.clients}
        for key in runs[0]:
            row[key] = statistics.median(run[key] for run in runs)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"{'scheme':>14} {'params':>8} {'encrypt s':>10} {'holder s':>9} {'server s':>9} "
          f"{'to holder MB':>13} {'upload MB':>10} {'max error':>10}")  # fmt: skip
    for r in rows:
        print(f"{r['scheme']:>14} {r['params']:>8,} {r['encrypt_s_mean']:>10.3f} "
              f"{r['key_holder_decrypt_s']:>9.3f} {r['server_s']:>9.3f} "
              f"{r['decrypt_request_bytes'] / 1e6:>13.2f} "
              f"{r['upload_bytes_per_client'] / 1e6:>10.2f} "
              f"{r['max_abs_error']:>10.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
