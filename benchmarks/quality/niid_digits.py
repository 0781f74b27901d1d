"""Non-IID clients, NIID-Bench style (Li et al. 2022): drift correction and personal
models under label, quantity and feature skew.

sklearn digits (or ``--dataset mnist1d``) over 100 clients, 20 a round, 5 local epochs of
batch 10, ``--rounds`` rounds, the default MLP, medians over ``--seeds``. Each arm runs at
every client learning rate of ``--lrs`` and is reported at its best (SCAFFOLD needs a
smaller step than FedAvg can take, so one rate would favour one arm). Partitions:
Dirichlet label skew at α = 0.1 and 0.5, two label-sorted shards per client (#C = 2),
lognormal quantity skew (σ = 1) with IID labels, and NIID-Bench's noise-based feature skew
(IID labels, client k of 100 adding Gaussian noise of σ·(k + 1)/100, σ = 0.5). Arms:

- global models: FedAvg, FedProx (μ = 0.01), SCAFFOLD, FedNova, FedDyn (α = 0.01), and
  FedAvg on ``mlp_bn`` (the MLP with batch norm, FedBN's baseline);
- personal models: FedPer and FedRep (the output layer ``4`` kept by each client; FedRep
  fits it for 5 epochs before each body pass), FedBN (``mlp_bn``'s batch-norm layers kept
  by each client), Ditto (λ = 0.1; its global model is FedAvg's, so only its personal
  accuracy is new), local fine-tuning (FedAvg's model, then one epoch on the client's own
  data before it evaluates: ``run.personalize_epochs``) and local only (each client
  trains the initial model on its own data alone, as many epochs as a federated client
  trains on average: rounds × 5 × 20/100);
- the centralised reference: one client holding all the training data (IID).

Two accuracies, both at the last round: *global* on the held-out set (left out for the
arms whose server model is not what a client uses: FedPer's and FedRep's initial head,
FedBN's initial batch norm, Ditto's and fine-tuning's FedAvg model, no model at all for
local only), and *per client*: the mean over every client of its own test split, with the
model that client would use.

    python benchmarks/quality/niid_digits.py [--seeds 0 1 2] [--rounds 30]
        [--lrs 0.05 0.1 0.3] [--dataset digits] [--arms fedavg fednova] [--merge]

``--merge`` keeps every run of an earlier results file (of the same rounds) and runs only
the missing ones; to run an arm again, delete its runs from the file first.
Prints a JSON line per run and the two tables; writes results/niid_<dataset>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from common import RESULTS, print_table, run_arms, save

from fedstream.simulation import SimulationConfig

PARTITIONS: dict[str, dict[str, Any]] = {
    "dir0.1": {"partition": "dirichlet", "alpha": 0.1},
    "dir0.5": {"partition": "dirichlet", "alpha": 0.5},
    "#C=2": {"partition": "shards", "shards_per_client": 2},
    "quantity": {"partition": "quantity", "quantity_sigma": 1.0},
    "feature": {"partition": "iid", "feature_noise": 0.5},
}
ARMS: dict[str, dict[str, dict[str, Any]]] = {
    "fedavg": {},
    "fedprox": {"strategy": {"name": "fedprox", "mu": 0.01}},
    "scaffold": {"strategy": {"name": "scaffold"}},
    "fednova": {"strategy": {"name": "fednova"}},
    "feddyn": {"strategy": {"name": "feddyn", "alpha": 0.01}},
    "fedavg_bn": {"model": {"name": "mlp_bn"}},
    "fedper": {"model": {"personal": ("4",)}},
    "fedrep": {"strategy": {"name": "fedrep", "head_epochs": 5}, "model": {"personal": ("4",)}},
    "fedbn": {"model": {"name": "mlp_bn", "local_batchnorm": True}},
    "ditto": {"strategy": {"name": "ditto", "personal_lambda": 0.1}},
    "finetune": {"run": {"personalize_epochs": 1}},
    "local": {},
}
PERSONAL_ONLY = ("fedper", "fedrep", "fedbn", "ditto", "finetune", "local")  # docstring
KIND = {"local": "local-only"}  # how an arm runs (``common.run_arms``); else "heldout"


def config(
    arm: str, partition: str, seed: int, rounds: int, dataset: str, lr: float
) -> SimulationConfig:
    base = SimulationConfig().with_changes(
        data={"dataset": dataset, "num_clients": 100, **PARTITIONS[partition]},
        run={"rounds": rounds, "clients_per_round": 20, "evaluate_every": 0},
        client={"local_epochs": 5, "batch_size": 10, "lr": lr},
        execution={"seed": seed},
    )
    return base.with_changes(**ARMS[arm]) if ARMS[arm] else base


def centralised(seed: int, rounds: int, dataset: str, lr: float) -> SimulationConfig:
    """One client with all the training data: ``rounds`` × 5 epochs of plain SGD."""
    return SimulationConfig().with_changes(
        data={"dataset": dataset, "num_clients": 1, "partition": "iid"},
        run={"rounds": rounds, "clients_per_round": 1, "evaluate_every": 0},
        client={"local_epochs": 5, "batch_size": 10, "lr": lr},
        execution={"seed": seed},
    )


def per_client(final: dict[str, float]) -> float:
    """The accuracy a client sees with the model it would use (module docstring)."""
    return final.get("fed_personal_accuracy", final["fed_accuracy"])


def earlier_runs(name: str, rounds: int) -> dict[str, dict[str, Any]]:
    """The runs of an earlier results file made with the same rounds, by label."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return {}
    stored = json.loads(path.read_text())
    if stored.get("rounds") != rounds:
        return {}
    return {run["label"]: run for run in stored["runs"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--dataset", default="digits", help="a classification data set")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.05, 0.1, 0.3])
    parser.add_argument("--merge", action="store_true", help="keep an earlier file's runs")
    args = parser.parse_args()
    settings = (args.rounds, args.dataset)
    jobs = [
        (
            f"{arm} on {part} lr {lr} seed {seed}",
            config(arm, part, seed, *settings, lr),
            KIND.get(arm, "heldout"),
        )
        for arm in args.arms
        for part in PARTITIONS
        for lr in args.lrs
        for seed in args.seeds
    ] + [
        (f"centralised lr {lr} seed {seed}", centralised(seed, *settings, lr), "heldout")
        for lr in args.lrs
        for seed in args.seeds
    ]
    earlier = earlier_runs(f"niid_{args.dataset}", args.rounds) if args.merge else {}
    runs = [*earlier.values(), *run_arms([j for j in jobs if j[0] not in earlier], workers=2)]

    def best(prefix: str, read: Any) -> tuple[float, float] | None:
        """The best over learning rates of the median over seeds, and its rate."""
        medians = []
        for lr in args.lrs:
            label = f"{prefix} lr {lr} seed"
            finals = [
                0.0 if r["failed"] else read(r["final"])
                for r in runs
                if r["label"].startswith(label)
            ]
            if finals:
                medians.append((statistics.median(finals), lr))
        return max(medians) if medians else None

    def cell(found: tuple[float, float] | None) -> str:
        return "" if found is None else f"{found[0]:.3f} ({found[1]:g})"

    central = best("centralised", lambda f: f["central_accuracy"])
    global_rows, client_rows = [], []
    for arm in args.arms:
        if arm not in PERSONAL_ONLY:
            global_rows.append(
                {"arm": arm, **{p: cell(best(f"{arm} on {p}", lambda f: f["central_accuracy"]))
                                for p in PARTITIONS}}
            )  # fmt: skip
        client_rows.append(
            {"arm": arm, **{p: cell(best(f"{arm} on {p}", per_client)) for p in PARTITIONS}}
        )
    global_rows.append({"arm": "centralised", **dict.fromkeys(PARTITIONS, cell(central))})
    print("global model, held-out accuracy (median over seeds, at the best client lr)")
    print_table(global_rows, ["arm", *PARTITIONS])
    print("per client: each client's test split with the model it would use")
    print_table(client_rows, ["arm", *PARTITIONS])
    save(
        f"niid_{args.dataset}",
        {"seeds": args.seeds, "rounds": args.rounds, "lrs": args.lrs, "global": global_rows,
         "per_client": client_rows, "runs": runs},
    )  # fmt: skip


if __name__ == "__main__":
    main()
