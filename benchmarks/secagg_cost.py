"""What SecAgg+ costs against the plain sum: 10, 50, 100 and 200 clients × 100k parameters,
with 0 %, 10 % and 30 % of the clients dropping out after they have shared their keys (the
expensive case: the server must rebuild their mask keys and strip their pairwise masks).

Every client's device side (``SecureDevice``, with its identity key and the roster) runs in
this process; the time spent in it is client CPU time, and the rest of ``secure_sum`` is
server time. The protocol is the one safe against a lying server: signed keys, a
consistency check, and t = ⌊k/2⌋ + 1. The neighbour count k is the one SecAgg+ chooses for
the dropout rate (``SecAggConfig(dropout_rate=…)``: a round fails with chance ≤ 1e-6),
and min(n − 1, 20) without dropouts. The plain sum is ``PlainSum`` over the same vectors,
with its bytes those of the Params wire format.

    python benchmarks/secagg_cost.py [--params 100000] [--clients 10 50 100 200] [--repeats 3]

Bytes are per sampled client, averaged over all of them (a client that drops out before
masking sends no masked vector). Times are medians over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Iterator, Mapping

import numpy as np

from fedstream.errors import ClientFailure
from fedstream.params import Params
from fedstream.secure.plain import PlainSum
from fedstream.secure.secagg import DerivedRoster, Identity, SecAggConfig, derived_identity_key
from fedstream.secure.session import SecureDevice, secure_sum
from fedstream.types import ClientUpdate

SECRET = 20261201  # the simulated PKI's secret


class Devices:
    """Clients in this process, each holding one update; times their side of the protocol
    (also used by ``he_protocol.py``)."""

    def __init__(self, updates: Mapping[str, ClientUpdate], drop_after_share: set[str]) -> None:
        roster = DerivedRoster(SECRET)
        self.devices = {
            c: SecureDevice(c, Identity(c, derived_identity_key(SECRET, c), roster))
            for c in updates
        }
        for client_id, update in updates.items():
            self.devices[client_id].hold(update)
        self.drop = drop_after_share
        self.client_cpu_s = 0.0
        self.stage_cpu_s: dict[str, float] = {}  # client CPU per stage, over all clients
        self.stage_bytes_down: dict[str, int] = {}  # request bytes per stage

    def exchange(
        self, stage: str, round_number: int, requests: Mapping[str, bytes]
    ) -> Iterator[tuple[str, bytes | ClientFailure]]:
        for client_id, request in requests.items():
            if client_id in self.drop and stage in ("mask", "consistency", "unmask"):
                yield client_id, ClientFailure(client_id, stage, "dropped out")
                continue
            started = time.process_time()
            answer = self.devices[client_id].answer(stage, round_number, request)
            spent = time.process_time() - started
            self.client_cpu_s += spent
            self.stage_cpu_s[stage] = self.stage_cpu_s.get(stage, 0.0) + spent
            self.stage_bytes_down[stage] = self.stage_bytes_down.get(stage, 0) + len(request)
            yield client_id, answer


def random_updates(
    clients: int, length: int, scale: float, rng: np.random.Generator
) -> dict[str, ClientUpdate]:
    """Round-1 updates of ``length`` float32 entries drawn N(0, scale²), weight 1, for
    clients ``c000``, ``c001``, … (also used by ``he_protocol.py``)."""
    return {
        f"c{i:03d}": ClientUpdate(
            f"c{i:03d}", 1, Params({"w": rng.normal(0, scale, length).astype(np.float32)}), 1.0
        )
        for i in range(clients)
    }


def measure(clients: int, dropout: float, length: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    like = Params({"w": np.zeros(length, dtype=np.float32)})
    updates = random_updates(clients, length, 0.01, rng)
    dropped = set(rng.choice(sorted(updates), size=round(dropout * clients), replace=False))
    started = time.perf_counter()
    plain = PlainSum(like)
    for update in updates.values():
        plain.add(update.payload, update.weight)
    plain_s = time.perf_counter() - started
    plain_bytes_up = sum(u.payload.wire_size() for u in updates.values())

    devices = Devices(updates, dropped)
    started = time.perf_counter()
    config = SecAggConfig(dropout_rate=dropout if dropout > 0 else None)
    result = secure_sum(devices, 1, sorted(updates), like, config, rng)
    total_s = time.perf_counter() - started
    expected = sum(u.payload.flat(np.float64) for c, u in updates.items() if c not in dropped)
    error = float(np.max(np.abs(result.aggregate.total.flat(np.float64) - expected)))
    k, t = config.resolve(clients)
    return {
        "clients": clients,
        "params": length,
        "dropout": dropout,
        "neighbours": k,
        "threshold": t,
        "included": len(result.included),
        "client_cpu_s_mean": devices.client_cpu_s / clients,
        "server_s": total_s - devices.client_cpu_s,
        "bytes_up_per_client": result.bytes_up / clients,
        "bytes_down_per_client": result.bytes_down / clients,
        "plain_server_s": plain_s,
        "plain_bytes_up_per_client": plain_bytes_up / clients,
        "max_abs_error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100, 200])
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    parser.add_argument("--repeats", type=int, default=3, help="times are medians of these")
    args = parser.parse_args()
    rows = []
    for clients in args.clients:
        for dropout in args.dropouts:
            runs = [measure(clients, dropout, args.params, seed=r) for r in range(args.repeats)]
            row = dict(runs[0])
            for key in ("client_cpu_s_mean", "server_s", "plain_server_s", "max_abs_error"):
                row[key] = statistics.median(run[key] for run in runs)
            row["server_over_plain"] = row["server_s"] / row["plain_server_s"]
            print(json.dumps(row), flush=True)
            rows.append(row)
    columns = (
        ("clients", "{:>7}"),
        ("dropout", "{:>7.0%}"),
        ("neighbours", "{:>4}"),
        ("threshold", "{:>4}"),
        ("client_cpu_s_mean", "{:>10.3f}"),
        ("server_s", "{:>8.2f}"),
        ("plain_server_s", "{:>8.3f}"),
        ("server_over_plain", "{:>6.0f}×"),
        ("bytes_up_per_client", "{:>11,.0f}"),
        ("plain_bytes_up_per_client", "{:>11,.0f}"),
        ("bytes_down_per_client", "{:>11,.0f}"),
        ("max_abs_error", "{:>9.1e}"),
    )
    print("  ".join(name for name, _ in columns))
    for row in rows:
        print("  ".join(fmt.format(row[name]) for name, fmt in columns))


if __name__ == "__main__":
    main()
