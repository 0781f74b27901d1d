"""``fedstream sweep``: a grid of settings over seeds, in parallel, resumable."""

from __future__ import annotations

from pathlib import Path

import click

from fedstream.cli.options import fail
from fedstream.cli.root import main
from fedstream.errors import FedstreamError


@main.command()
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Sweep folder: a run folder per run, store.sqlite, sweep.json, sweep.png "
    "[default: runs/sweep-<file name>].",
)
@click.option("--workers", type=int, default=2, show_default=True, help="Runs at a time.")
@click.option(
    "--executor",
    type=click.Choice(["processes", "ray"]),
    default="processes",
    show_default=True,
    help="Where the runs go: worker processes on this machine, or Ray tasks.",
)
def sweep(sweep_file: Path, output: Path | None, workers: int, executor: str) -> None:
    """Run every combination of SWEEP_FILE's [grid] for each of its seeds, and compare.

    The file holds seeds = [...], a [grid] of "section.name" = [values] and, as a run file
    does, the settings every run shares. Running it again skips finished runs and resumes
    interrupted ones. Ends with a table of each arm's median and spread over the seeds, and
    an overlay plot of their curves.
    """
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from fedstream.sweep import load_sweep, plot_overlay, run_sweep, summarise
    from fedstream.sweep.summary import write_summary

    folder = output or Path("runs") / f"sweep-{sweep_file.stem}"
    try:
        spec = load_sweep(sweep_file)
        count = len(spec.runs())
        with Progress(console=Console(stderr=True)) as progress:
            task = progress.add_task(f"{count} runs", total=count)

            def done(run: str, what: str) -> None:
                progress.console.print(f"{run}: {what}")
                progress.advance(task)

            run_sweep(spec, folder, workers=workers, executor=executor, on_done=done)
        summaries = summarise(spec, folder)
    except FedstreamError as exc:
        fail(exc)
    write_summary(summaries, folder / "sweep.json")
    plot_overlay(summaries, folder / "sweep.png", f"sweep {sweep_file.stem}")
    metric = summaries[0].metric
    table = Table(
        title=f"{sweep_file.stem}: {metric} after the last round, over seeds {list(spec.seeds)}"
    )
    for column in ("arm", "median", "min", "max", "ε (median)"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for s in summaries:
        epsilon = f"{s.epsilon:.2f}" if s.epsilon is not None else ""
        table.add_row(s.arm, f"{s.median:.4f}", f"{s.low:.4f}", f"{s.high:.4f}", epsilon)
    Console().print(table)
    click.echo(f"{folder / 'sweep.json'}\n{folder / 'sweep.png'}")
