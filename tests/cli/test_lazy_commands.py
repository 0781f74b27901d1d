"""``fedstream --help`` and ``import fedstream`` load no heavy module: commands and public
names are imported when first used, and the command list's summaries match each
command's own help."""

import subprocess
import sys

import click
import pytest

import fedstream
from fedstream.cli.root import COMMANDS, main

CLI = "from fedstream.cli import main\ntry:\n    main(['{}'])\nexcept SystemExit:\n    pass"
HEAVY = ("torch", "sklearn", "grpc", "scipy", "matplotlib", "fedstream.simulation")


def modules_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "code",
    [
        "import fedstream",
        "from fedstream.errors import ConfigError",
        CLI.format("--help"),
        CLI.format("--version"),
    ],
)
def test_help_version_and_import_load_nothing_heavy(code):
    loaded = modules_after(code)
    assert not [m for m in HEAVY if m in loaded]


def test_the_command_list_shows_each_commands_own_summary():
    context = click.Context(main)
    for name, (module, summary) in COMMANDS.items():
        command = main.get_command(context, name)
        assert command is not None and command.callback is not None
        assert command.callback.__module__ == module
        assert command.help is not None and command.help.splitlines()[0] == summary
    assert sorted(main.commands) == sorted(COMMANDS)  # no command outside the table


def test_public_names_load_on_first_use():
    assert set(fedstream.__all__) == set(fedstream._PUBLIC) | {"__version__"}
    assert fedstream.FedAvg.__module__.startswith("fedstream.strategies")
    assert fedstream.simulation.simulate is fedstream.simulate  # a subpackage too
    assert "simulate" in dir(fedstream)
    with pytest.raises(AttributeError, match="module 'fedstream' has no attribute 'nope'"):
        fedstream.nope  # noqa: B018


def test_a_deployed_clients_imports_and_digits_leave_out_sklearn_and_scipy_stats():
    # about a second each per process, and a deployment starts a process per client
    loaded = modules_after(
        "from tests.settings import make_config\n"
        "from fedstream.simulation.engine import build_dataset\n"
        "import fedstream.deploy, fedstream.transport.grpc.client\n"
        "build_dataset(make_config(dataset='digits'))"
    )
    assert "torch" in loaded and "fedstream.data.datasets" in loaded  # it did load them
    assert not [m for m in ("sklearn", "scipy.stats") if m in loaded]
