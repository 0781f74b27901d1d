"""Mutation testing of fedstream's core: how many small, plausible bugs do the tests catch?

For each group of core modules this runs mutmut (3.8.1) in a scratch clone of the
committed tree, with the group's own test folder (the tests mirror the package), and
prints one JSON line per module plus a table: mutants made, killed (a test failed, or the
mutant ran past mutmut's CPU-time limit), survived, and the score
``(killed + timeout) / (total - skipped)`` that mutmut's own badge uses. ``--show`` prints
the diff of every surviving mutant; TESTING.md lists them with why each is equivalent or
accepted.

Not part of CI: a full run makes about 4,000 mutants and takes hours on two cores.

    pip install -e ".[test,mutation]"
    python tools/mutation.py                  # every group
    python tools/mutation.py --group params --show
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Group:
    """Modules mutated together, and the tests run against them (paths from the repo root)."""

    modules: tuple[str, ...]
    tests: tuple[str, ...]


GROUPS: dict[str, Group] = {
    "params": Group(("src/fedstream/params.py",), ("tests/test_params.py",)),
    "strategies": Group(
        (
            "src/fedstream/strategies/base.py",
            "src/fedstream/strategies/fedavg.py",
            "src/fedstream/strategies/fedopt.py",
            "src/fedstream/strategies/scaffold.py",
            "src/fedstream/strategies/robust.py",
            "src/fedstream/strategies/fednova.py",
            "src/fedstream/strategies/feddyn.py",
            "src/fedstream/strategies/ditto.py",
            "src/fedstream/strategies/fedrep.py",
        ),
        ("tests/strategies/",),
    ),
    "sums": Group(("src/fedstream/secure/plain.py",), ("tests/secure/test_plain.py",)),
    "secagg": Group(
        ("src/fedstream/secure/secagg.py",),
        (
            "tests/secure/test_secagg.py",
            "tests/secure/test_secagg_sizing.py",
            "tests/secure/test_identities.py",
            "tests/secure/test_lying_server.py",
        ),
    ),
    "privacy": Group(
        (
            "src/fedstream/privacy/mechanisms.py",
            "src/fedstream/privacy/dp.py",
            "src/fedstream/privacy/accountant.py",
        ),
        ("tests/privacy/",),
    ),
    "clipping": Group(
        ("src/fedstream/privacy/clipping.py",),
        ("tests/privacy/test_mechanisms_and_accountant.py",),
    ),
    "compression": Group(("src/fedstream/compression/codecs.py",), ("tests/compression/",)),
    "rounds": Group(
        ("src/fedstream/rounds/collect.py", "src/fedstream/rounds/aggregate.py"),
        ("tests/rounds/",),
    ),
}

# mutmut's status names by the exit code it records for a mutant (mutmut/stats.py)
KILLED = {1, 3}
TIMEOUT = {36, -24, 24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}
SKIPPED = {34}
NOT_CHECKED = {None}


@dataclass(frozen=True)
class ModuleScore:
    """Outcome of every mutant of one module."""

    module: str
    total: int
    killed: int
    timeout: int
    survived: int
    no_tests: int
    other: int  # not checked (an interrupted run), suspicious, segfault
    survivors: tuple[str, ...]

    @property
    def score(self) -> float:
        """Per cent of mutants detected, over all mutants that were not skipped."""
        return 100.0 * (self.killed + self.timeout) / self.total if self.total else 100.0


def mutmut_config(group: Group) -> str:
    """mutmut's ``[mutmut]`` section for one group, as the clone's (untracked) setup.cfg."""

    def lines(items: Sequence[str]) -> str:
        return "".join(f"\n    {item}" for item in items)

    return (
        "[mutmut]\n"
        "source_paths = src/\n"
        f"only_mutate ={lines(group.modules)}\n"
        f"pytest_add_cli_args_test_selection ={lines(group.tests)}\n"
        f"pytest_add_cli_args ={lines(['-p', 'no:cacheprovider', '-q', '-m', 'not slow'])}\n"
        # each mutant forks from a process that has imported the tests but run none, so no
        # cache an earlier test filled (the params header cache) hides a mutant
        "process_isolation = forkserver\n"
        # a mutant still running after 3 × 2 × (its tests' time + 1 s) of CPU is looping (a
        # rejection sampler that never accepts): mutmut's default of 15 × spent up to 15
        # minutes on each of those in the privacy group
        "timeout_multiplier = 3\n"
    )


def prepare_clone(workdir: Path, group: Group) -> None:
    """A fresh clone of the committed tree at ``workdir``, configured for ``group``."""
    if workdir.exists():
        subprocess.run(["rm", "-rf", str(workdir)], check=True)
    workdir.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(workdir)], check=True)
    (workdir / "setup.cfg").write_text(mutmut_config(group))


def update_clone(workdir: Path, group: Group) -> None:
    """Bring an earlier run's clone to the newest commit, keeping mutmut's results but not
    its record of which tests reach which function: mutmut 3.8 adds new test functions to
    that record but never looks again at a test that changed, so a test extended to reach
    another function would not be run against that function's mutants."""
    subprocess.run(["git", "checkout", "--quiet", "--", "."], cwd=workdir, check=True)
    subprocess.run(["git", "pull", "--quiet", "--ff-only"], cwd=workdir, check=True)
    (workdir / "setup.cfg").write_text(mutmut_config(group))
    (workdir / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)


def run_mutmut(workdir: Path, log: Path, mutants: list[str] | None = None) -> None:
    """``mutmut run`` in ``workdir`` (on ``mutants`` only, if named); progress to ``log``."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}  # a skip must not fail a mutant
    with log.open("w") as out:
        subprocess.run(
            [sys.executable, "-m", "mutmut", "run", *(mutants or [])],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
        )


def exit_codes(workdir: Path, module: str) -> dict[str, int | None]:
    """mutmut's record of one module: each mutant's name and the exit code of its tests."""
    meta_path = workdir / "mutants" / f"{module}.meta"
    codes: dict[str, int | None] = json.loads(meta_path.read_text())["exit_code_by_key"]
    return codes


def undetected(
    workdir: Path, module: str, unchecked_only: bool = False, timeouts: bool = False
) -> list[str]:
    """The mutants of ``module`` that survived, that no test reached, or that an
    interrupted run left unchecked (only those last, with ``unchecked_only``), and with
    ``timeouts`` those that ran out of time too (a timeout under a loaded machine may be
    a slow test, not a mutant that loops: these are confirmed on a quiet one)."""
    again = NOT_CHECKED if unchecked_only else SURVIVED | NO_TESTS | NOT_CHECKED
    again = again | TIMEOUT if timeouts else again
    return sorted(k for k, c in exit_codes(workdir, module).items() if c in again)


def score_module(workdir: Path, module: str) -> ModuleScore:
    """Counts from mutmut's record of one module (``mutants/<module>.meta``)."""
    codes = exit_codes(workdir, module)
    values = [c for c in codes.values() if c not in SKIPPED]
    survivors = tuple(sorted(k for k, c in codes.items() if c in SURVIVED))
    killed = sum(c in KILLED for c in values)
    timeout = sum(c in TIMEOUT for c in values)
    no_tests = sum(c in NO_TESTS for c in values)
    return ModuleScore(
        module=module,
        total=len(values),
        killed=killed,
        timeout=timeout,
        survived=len(survivors),
        no_tests=no_tests,
        other=len(values) - killed - timeout - len(survivors) - no_tests,
        survivors=survivors,
    )


def show_mutant(workdir: Path, name: str) -> str:
    """The diff mutmut made for one mutant."""
    result = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def table(scores: list[ModuleScore]) -> str:
    """A markdown table of the scores, one row per module."""
    rows = [
        "| module | mutants | killed | timeout | survived | no tests | unchecked | score |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in scores:
        rows.append(
            f"| `{s.module.removeprefix('src/fedstream/')}` | {s.total} | {s.killed} | "
            f"{s.timeout} | {s.survived} | {s.no_tests} | {s.other} | {s.score:.1f} % |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--group", action="append", choices=sorted(GROUPS), help="repeatable; default: all"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fedstream-mutation"))
    parser.add_argument("--show", action="store_true", help="print every survivor's diff")
    parser.add_argument(
        "--reuse", action="store_true", help="score an earlier run's clones without running"
    )
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="update an earlier run's clones to the newest commit and test again only the "
        "mutants that survived or had no test",
    )
    parser.add_argument(
        "--timeouts",
        action="store_true",
        help="with --rerun: test the mutants that timed out again too (confirm on a quiet machine)",
    )
    parser.add_argument(
        "--unchecked-only",
        action="store_true",
        help="with --rerun: test only the mutants an interrupted run left unchecked",
    )
    args = parser.parse_args(argv)

    scores: list[ModuleScore] = []
    for name in args.group or list(GROUPS):
        group = GROUPS[name]
        workdir = args.workdir / name
        started = time.monotonic()
        if args.rerun:
            update_clone(workdir, group)
            again = [
                m
                for module in group.modules
                for m in undetected(workdir, module, args.unchecked_only, args.timeouts)
            ]
            print(f"{name}: testing {len(again)} mutants again …", file=sys.stderr, flush=True)
            if again:
                run_mutmut(workdir, args.workdir / f"{name}.log", again)
        elif not args.reuse:
            prepare_clone(workdir, group)
            print(f"{name}: mutating {len(group.modules)} modules …", file=sys.stderr, flush=True)
            run_mutmut(workdir, args.workdir / f"{name}.log")
        print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
        for module in group.modules:
            s = score_module(workdir, module)
            scores.append(s)
            record = {k: v for k, v in s.__dict__.items() if k != "survivors"}
            print(json.dumps({"group": name, **record, "score": round(s.score, 1)}))
            if args.show:
                for mutant in s.survivors:
                    print(show_mutant(workdir, mutant))
    print(table(scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
