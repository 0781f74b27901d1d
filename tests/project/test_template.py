"""``fedstream new``: a project that runs as written, a name that must be a package name,
and a folder of the user's never overwritten."""

import json
import subprocess
import sys
import tomllib

import pytest

from fedstream import ConfigError
from fedstream.project import check_project_name, project_files, write_project


def test_the_project_holds_settings_model_data_app_and_readme():
    files = project_files("my-study")
    assert sorted(files) == [
        "README.md", "my_study/__init__.py", "my_study/data.py", "my_study/model.py",
        "pyproject.toml",
    ]  # fmt: skip
    settings = tomllib.loads(files["pyproject.toml"])
    assert settings["project"]["name"] == "my-study"
    assert settings["tool"]["fedstream"]["model"] == {"app": "my_study:app"}
    assert settings["tool"]["fedstream"]["run"] == {"rounds": 20, "clients_per_round": 4}
    for path, text in files.items():
        if path.endswith(".py"):
            compile(text, path, "exec")  # every module is valid Python


@pytest.mark.parametrize("name", ["9lives", "class", "my study", "", "é"])
def test_a_name_that_cannot_be_a_package_is_refused(name):
    with pytest.raises(ConfigError, match=r"expected letters, digits, '-' and '_', starting with"):
        check_project_name(name)
    assert check_project_name("My-Study_2") == "My_Study_2"


def test_a_folder_that_holds_anything_is_left_as_it_was(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(
        ConfigError, match=r"^folder='.*' is invalid: expected a new or empty folder"
    ):
        write_project(tmp_path, "demo")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_new_project_runs_with_fedstream_run_as_written(tmp_path):
    cli = [sys.executable, "-m", "fedstream.cli"]
    made = subprocess.run([*cli, "new", "demo"], cwd=tmp_path, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().endswith("next: cd demo && fedstream run")
    done = subprocess.run(
        [*cli, "run", "--run.rounds", "2", "--quiet", "--output", "runs/two"],
        cwd=tmp_path / "demo", capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "demo" / "runs" / "two" / "results.json").read_text())
    assert results["config"]["model"]["app"] == "demo:app"
    assert results["data"]["clients"] == 8
    assert results["final_metrics"]["central_accuracy"] > 0.5  # 0.615; chance is 0.1
    again = subprocess.run([*cli, "new", "demo"], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 2 and "expected a new or empty folder" in again.stderr
