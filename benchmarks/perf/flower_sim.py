"""The same FedAvg on Flower's simulation runtime (flwr 1.41, Ray backend).

Runs in Flower's own venv (``benchmarks/perf/setup_venv.sh flower``; Flower pins protobuf < 7,
which fedstream's gRPC code cannot use):

    benchmarks/perf/.flower-venv/bin/python benchmarks/perf/flower_sim.py WORKLOAD.npz

One virtual SuperNode per client, actors of one CPU each. The ServerApp uses Flower's
Message-API ``FedAvg`` with its sampling replaced by the exported schedule: each round
it sends the train message for exported client c to the c-th node with the client index
and shuffle seed in the config, and the ClientApp trains on that client's rows with the
same SGD as every other contender. Aggregation, messaging and the round loop are
Flower's own. Only the last round's global model is evaluated (on the server's held-out
set), as for the other contenders. Prints one JSON line: the wall time of
``strategy.start`` (the rounds, less the wait for virtual nodes to register), the whole
``run_simulation`` call (with Ray's start), client updates and final accuracy.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

HERE = str(Path(__file__).parent)
sys.path.insert(0, HERE)
# Ray's actors unpickle the ClientApp, which refers to this folder's workloads module
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)
from workloads import accuracy, build_module, hyperparameters, load, train_locally  # noqa: E402

WORKLOAD = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path()
_cache: dict[str, Any] = {}


def spec() -> dict[str, Any]:
    """The workload, loaded once per process (each Ray actor keeps it)."""
    if "spec" not in _cache:
        torch.set_num_threads(1)
        _cache["spec"] = load(WORKLOAD)
        _cache["x"] = torch.from_numpy(_cache["spec"]["x"])
        _cache["y"] = torch.from_numpy(_cache["spec"]["y"])
        _cache["module"] = build_module(_cache["spec"])
    return _cache


client_app = ClientApp()


@client_app.train()
def train(message: Message, context: Context) -> Message:
    held = spec()
    workload, module = held["spec"], held["module"]
    module.load_state_dict(message.content["arrays"].to_torch_state_dict())
    config = message.content["config"]
    client = int(config["client"])
    offsets = workload["offsets"]
    rows = slice(int(offsets[client]), int(offsets[client + 1]))
    epochs, batch, lr = hyperparameters(workload)
    train_locally(module, held["x"][rows], held["y"][rows], int(config["seed"]), epochs, batch, lr)
    content = RecordDict(
        {
            "arrays": ArrayRecord(module.state_dict()),
            "metrics": MetricRecord({"num-examples": rows.stop - rows.start}),
        }
    )
    return Message(content=content, reply_to=message)


class ScheduledFedAvg(FedAvg):
    """Flower's FedAvg, sampling the exported clients instead of drawing its own."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        workload = spec()["spec"]
        waiting = time.perf_counter()
        while len(nodes := sorted(grid.get_node_ids())) < len(workload["offsets"]) - 1:
            time.sleep(0.1)  # the virtual nodes are still registering (round 1 only)
        spec()["registering_s"] = spec().get("registering_s", 0.0) + time.perf_counter() - waiting
        messages = []
        for client, seed in zip(
            workload["chosen"][server_round - 1], workload["seeds"][server_round - 1], strict=True
        ):
            record = RecordDict(
                {
                    "arrays": arrays,
                    "config": ConfigRecord(
                        {"client": int(client), "seed": int(seed), "server-round": server_round}
                    ),
                }
            )
            messages.append(
                Message(content=record, message_type="train", dst_node_id=nodes[client])
            )
        return messages


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    held = spec()
    workload, module = held["spec"], held["module"]
    rounds = len(workload["chosen"])
    strategy = ScheduledFedAvg(fraction_evaluate=0.0)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round != rounds:
            return None
        module.load_state_dict(arrays.to_torch_state_dict())
        return MetricRecord({"accuracy": accuracy(module, workload)})

    started = time.perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(module.state_dict()),
        num_rounds=rounds,
        evaluate_fn=evaluate,
    )
    # the rounds, less the wait for virtual nodes to register (Flower's start-up)
    held["rounds_s"] = time.perf_counter() - started - held.get("registering_s", 0.0)
    held["accuracy"] = result.evaluate_metrics_serverapp[rounds]["accuracy"]


def run() -> None:
    logging.getLogger("flwr").setLevel(logging.WARNING)
    workload = spec()["spec"]
    started = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=int(len(workload["offsets"]) - 1),
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    total = time.perf_counter() - started
    held = spec()
    updates = int(workload["chosen"].size)
    print(
        json.dumps(
            {
                "wall_s": held["rounds_s"],
                "registering_s": held.get("registering_s", 0.0),
                "total_s": total,
                "client_updates": updates,
                "final_accuracy": held["accuracy"],
            }
        )
    )


if __name__ == "__main__":
    run()
