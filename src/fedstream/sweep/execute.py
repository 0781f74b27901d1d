"""Running a sweep's runs: each in its own folder under the sweep's, all recorded in one
run store, several at a time on worker processes (or Ray tasks). A run that finished is
left as it is, and one that was interrupted resumes from its newest checkpoint, so running
the same sweep again completes it."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from fedstream import checks
from fedstream.sweep.spec import Sweep

SWEEP_EXECUTORS = ("processes", "ray")


def finished(folder: Path, rounds: int) -> bool:
    """Whether ``folder`` holds a run that ended without error after ``rounds`` rounds (its
    results.json says so); a run with fewer, as when the sweep's rounds were raised, is
    resumed to them."""
    try:
        results = json.loads((folder / "results.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return results.get("error") is None and len(results.get("rounds", ())) >= rounds


def run_one(settings: dict[str, Any], folder: str, store: str) -> str:
    """One run of the sweep, in a worker (``run_sweep`` has left out the finished ones):
    resumed if interrupted, else started. Returns what it did."""
    from fedstream.simulation.config import from_mapping
    from fedstream.simulation.engine import simulate

    out = Path(folder)
    if (out / "config.json").exists():
        simulate(
            output_dir=out, resume=True, store=store, run={"rounds": settings["run"]["rounds"]}
        )
        return "resumed"
    simulate(from_mapping(settings, source="sweep"), output_dir=out, store=store)
    return "ran"


def run_sweep(
    sweep: Sweep,
    folder: Path,
    workers: int = 2,
    executor: str = "processes",
    on_done: Callable[[str, str], None] | None = None,
) -> list[str]:
    """Run every run of ``sweep`` under ``folder`` (``<folder>/<run>/``, store
    ``<folder>/store.sqlite``), ``workers`` at a time, each with one torch thread.
    ``on_done(run, what)`` hears each run end. Returns the run folder names in order."""
    checks.positive_int("workers", workers)
    checks.one_of("executor", executor, SWEEP_EXECUTORS)
    folder.mkdir(parents=True, exist_ok=True)
    store = str(folder / "store.sqlite")
    jobs: list[tuple[str, dict[str, Any], str]] = []
    for name, arm, seed in sweep.runs():
        settings = sweep.config(arm, seed).with_changes(execution={"threads": 1}).to_dict()
        jobs.append((name, settings, str(folder / name)))
    report = on_done or (lambda run, what: None)
    done = {name for name, s, run_folder in jobs if finished(Path(run_folder), s["run"]["rounds"])}
    for name in sorted(done):
        report(name, "already done")  # no worker needed to skip it
    jobs = [job for job in jobs if job[0] not in done]
    if executor == "ray":
        _run_on_ray(jobs, store, workers, report)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(run_one, s, f, store): n for n, s, f in jobs}
            for future in as_completed(futures):
                report(futures[future], future.result())
    return [name for name, _, _ in sweep.runs()]


def _run_on_ray(
    jobs: list[tuple[str, dict[str, Any], str]],
    store: str,
    workers: int,
    report: Callable[[str, str], None],
) -> None:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(run_one)
        pending = {task.remote(s, f, store): n for n, s, f in jobs}
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            report(pending.pop(done), ray.get(done))
    finally:
        if started_here:
            ray.shutdown()
