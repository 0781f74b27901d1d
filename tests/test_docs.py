"""What the docs tell a user to write works: every TOML run file in the README and docs/
is a valid config as ``fedstream run --config`` reads it."""

import re
import tomllib
from pathlib import Path

import pytest

from fedstream.cli.options import load_config
from fedstream.sweep import sweep_from_mapping

ROOT = Path(__file__).resolve().parent.parent
DOC_TOML = [
    (doc.name, block)
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
    for block in re.findall(r"```toml\n(.*?)```", doc.read_text(), flags=re.S)
]


def test_the_docs_hold_run_files():
    assert {doc for doc, _ in DOC_TOML} >= {"README.md", "deployment.md", "first-hour.md"}


@pytest.mark.parametrize(("doc", "block"), DOC_TOML, ids=[doc for doc, _ in DOC_TOML])
def test_every_run_and_sweep_file_in_the_docs_is_valid(tmp_path, doc, block):
    if "[grid]" in block:  # a sweep file: every arm's config is checked
        assert len(sweep_from_mapping(tomllib.loads(block)).runs()) >= 1
        return
    (tmp_path / "run.toml").write_text(block)
    config = load_config(tmp_path / "run.toml", None, {})
    assert config.run.rounds >= 1


def test_the_readme_states_both_sets_of_defaults_as_the_code_has_them():
    from fedstream import RoundConfig
    from fedstream.simulation import SimulationConfig

    text = " ".join((ROOT / "README.md").read_text().split())
    stated = re.findall(
        r"(\d+) clients a round, (\d+) local epochs?, batch (\d+), lr (\d+(?:\.\d+)?)", text
    )
    actual = [
        (str(c.clients_per_round), str(c.local_epochs), str(c.batch_size), f"{c.lr:g}")
        for c in (RoundConfig(), SimulationConfig().round_config())
    ]
    assert stated == actual
