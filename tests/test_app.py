"""A user's own model, data and training (``fedstream.App``), through everything fedstream
does: simulation with its outputs, resume, worker processes, serving, the command line,
and a check before round 1 that names what does not fit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fedstream
from fedstream import App, ConfigError
from fedstream.serving.registry import load_model
from fedstream.simulation import SimulationConfig, build
from fedstream.store import RunStore
from tests.apps.tiny import SmallCNN, by_function, digits, heldout, sites
from tests.apps.tiny import app as tiny
from tests.settings import nested

RUN = {"rounds": 4, "clients_per_round": 3, "local_epochs": 1, "batch_size": 8, "lr": 0.1}
ROOT = Path(__file__).resolve().parent.parent


def test_an_app_holding_data_in_every_form_trains_and_writes_every_output(tmp_path):
    result = fedstream.simulate(app=tiny, output_dir=tmp_path / "run", **nested(**RUN))
    assert result.trainer.startswith("vectorized")  # batch norm and dropout stay vectorised
    assert result.final_metrics["central_accuracy"] > 0.5  # 10 classes: chance is 0.1
    document = json.loads((tmp_path / "run" / "results.json").read_text())
    assert document["data"]["dataset"] == "tiny-cnn" and document["data"]["clients"] == 5
    # sites 3 and 4 hold no test split: they answer, with no metrics
    evaluated = {c: bool(m) for c, m in result.reports[-1].evaluations.items()}
    assert evaluated == {f"site-{k}": k < 3 for k in range(5)}
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {
        "results.json", "metrics.csv", "curves.png", "config.json", "checkpoints",
    }  # fmt: skip
    assert RunStore(tmp_path / "store.sqlite").run("run")["status"] == "finished"
    # integer buffers stay integers, and on the clients
    assert result.state.params["features.1.num_batches_tracked"].dtype == np.int64
    # the same data given as a function of the client id trains the same
    again = fedstream.simulate(app=by_function, **nested(**RUN))
    assert again.state.params.bit_equal(result.state.params)


@pytest.mark.parametrize("trainer", ["vectorized", "sequential"])
def test_a_run_with_batch_norm_and_dropout_resumes_bit_for_bit(tmp_path, trainer):
    straight = fedstream.simulate(app=tiny, **nested(trainer=trainer, **RUN))
    fedstream.simulate(
        app=tiny, output_dir=tmp_path / "run", **nested(trainer=trainer, **RUN | {"rounds": 2})
    )
    resumed = fedstream.simulate(
        app=tiny, output_dir=tmp_path / "run", resume=True, **nested(rounds=4)
    )
    assert resumed.state.params.bit_equal(straight.state.params)
    assert resumed.final_metrics == straight.final_metrics


@pytest.mark.slow
def test_an_app_runs_on_worker_processes_and_ends_where_the_in_process_run_does():
    one_at_a_time = {**RUN, "trainer": "sequential"}
    alone = fedstream.simulate(app="tests.apps.tiny:app", **nested(**one_at_a_time))
    spread = fedstream.simulate(
        app="tests.apps.tiny:app", **nested(executor="processes", workers=2, **one_at_a_time)
    )
    assert spread.state.params.bit_equal(alone.state.params)
    # vectorised, each worker's cohort is a different batch for the BLAS: equal to rounding
    # (dropout masks and batch statistics are each client's own)
    cohorts = fedstream.simulate(
        app="tests.apps.tiny:app", **nested(executor="processes", workers=2, **RUN)
    )
    np.testing.assert_allclose(cohorts.state.params.flat(), alone.state.params.flat(), atol=2e-5)


def test_an_app_composes_with_dp_secure_sums_compression_and_robust_rules():
    private = fedstream.simulate(
        app=tiny, privacy={"level": "client", "noise": 0.5, "clip": 1.0},
        secure={"scheme": "secagg+"}, compression={"codec": "q8"},
        # 3 of 5 by Poisson sampling would often draw one client, too few for SecAgg+
        **nested({"run": {"sampling": "fixed"}}, **RUN),
    )  # fmt: skip
    assert private.final_metrics["dp_epsilon"] > 0 and private.state.params.is_finite()
    assert private.config.label == "fedavg + DP (client) + SecAgg+ + q8"
    robust = fedstream.simulate(
        app=tiny, strategy={"aggregator": "median"}, compression={"codec": "topk:0.2"},
        **nested(**RUN),
    )  # fmt: skip
    assert robust.final_metrics["central_accuracy"] > 0.5  # 0.61; one round reaches 0.19


def test_fedbn_keeps_every_batch_norm_entry_on_each_client():
    result = fedstream.simulate(app=tiny, **nested(local_batchnorm=True, **RUN))
    config = SimulationConfig().with_changes(**nested(local_batchnorm=True, **RUN))
    initial = build(config, tiny).initial.params
    for name in ("features.1.weight", "features.1.running_mean", "features.1.running_var"):
        assert result.state.params[name].tolist() == initial[name].tolist()  # never averaged
    assert result.state.params["head.2.weight"].tolist() != initial["head.2.weight"].tolist()


def test_a_served_app_model_answers_as_the_module_does(tmp_path):
    fedstream.simulate(app="tests.apps.tiny:app", output_dir=tmp_path / "run", **nested(**RUN))
    store = RunStore(tmp_path / "store.sqlite")
    loaded = load_model(store, "run", None)
    assert loaded.input_shape == (1, 8, 8) and loaded.version == 4
    x = heldout()[0][:5]
    _, blob = store.model("run", 4)
    module = SmallCNN()
    params = fedstream.Params.from_bytes(blob)
    module.load_state_dict({n: torch.from_numpy(np.array(a)) for n, a in params.items()})
    module.eval()
    with torch.no_grad():
        np.testing.assert_array_equal(
            loaded.module(torch.from_numpy(x)), module(torch.from_numpy(x))
        )
    # a run made from an app object needs the app named to be served
    fedstream.simulate(app=tiny, output_dir=tmp_path / "object", **nested(**RUN | {"rounds": 1}))
    with pytest.raises(ConfigError, match="--app=None is invalid: expected the app that made run"):
        load_model(store, "object", None)
    assert load_model(store, "object", None, app="tests.apps.tiny:app").version == 1


def bad(**changes):
    parts = {"model": SmallCNN, "data": sites(), "name": "bad"} | changes
    return App(**parts)


@pytest.mark.parametrize(
    ("app", "message"),
    [
        (
            bad(model=lambda: SmallCNN(classes=3)),
            r"clients\['site-0'\]\.y='labels up to 9' is invalid: expected labels in \[0, 3\)",
        ),
        (
            bad(model=lambda: nn.Sequential(nn.Flatten(), nn.Linear(10, 10))),
            r"app\.model=.* is invalid: expected a model that takes the inputs of client "
            r"'site-0', of shape \(1, 8, 8\)",
        ),
        (
            bad(
                data=lambda c: None if c == "site-1" else sites()[c],
                client_ids=["site-0", "site-1"],
            ),
            r"clients\['site-1'\]=None is invalid: expected data \(app\.data gave nothing\)",
        ),
        (
            bad(data={"site-0": (digits()[0][:0], digits()[1][:0])}),
            r"clients\['site-0'\]='0 training examples' is invalid",
        ),
        (
            bad(data={"site-0": "pictures/"}),
            r"clients\['site-0'\]\.train='str' is invalid: expected one of: ClientData",
        ),
        (
            bad(train=lambda module, data, config, rng: [0.5]),
            r"train function's result for client 'site-0'=\[0\.5\] is invalid: expected a mapping",
        ),
    ],
)
def test_an_app_that_does_not_fit_is_refused_before_round_one_naming_the_client(app, message):
    with pytest.raises(ConfigError, match=message):
        fedstream.simulate(app=app, **nested(**RUN | {"clients_per_round": 1}))


def test_bad_app_parts_are_named_when_the_app_is_made():
    with pytest.raises(
        ConfigError, match=r"task='classifcation' .* \(did you mean 'classification'"
    ):
        bad(task="classifcation")
    with pytest.raises(ConfigError, match=r"app\.client_ids=None is invalid: expected the client"):
        bad(data=lambda client_id: None)
    with pytest.raises(ConfigError, match=r"app=.nowhere:app. is invalid: expected an importable"):
        fedstream.simulate(app="nowhere:app")
    with pytest.raises(ConfigError, match="trainer='vectorized' is invalid: expected 'auto' or"):
        fedstream.simulate(
            app=bad(optimizer=torch.optim.Adam), **nested(trainer="vectorized", **RUN)
        )


def write_project(folder: Path, table: str = "") -> None:
    """A user's project: a package holding an app, and a pyproject.toml."""
    package = folder / "clinic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "job.py").write_text(
        textwrap.dedent(
            """
            import fedstream
            from tests.apps.tiny import SmallCNN, sites

            app = fedstream.App(model=SmallCNN, data=sites(), name="clinic")
            """
        )
    )
    (folder / "pyproject.toml").write_text(f'[project]\nname = "clinic"\n{table}')


def fedstream_cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "fedstream.cli", *args], cwd=folder, env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_the_command_line_runs_an_app_named_by_flag_or_in_pyproject(tmp_path):
    flags = ["--run.rounds", "2", "--run.clients-per-round", "2", "--quiet"]
    by_flag = tmp_path / "flag"
    by_flag.mkdir()
    write_project(by_flag)
    done = fedstream_cli(by_flag, "run", "--app", "clinic.job:app", *flags, "--output", "out")
    assert done.returncode == 0, done.stderr
    assert json.loads((by_flag / "out" / "config.json").read_text())["model"]["app"] == (
        "clinic.job:app"
    )  # --app is --model.app
    by_table = tmp_path / "table"
    by_table.mkdir()
    write_project(
        by_table,
        '[tool.fedstream.model]\napp = "clinic.job:app"\n[tool.fedstream.client]\nlr = 0.1\n',
    )
    done = fedstream_cli(by_table, "run", *flags, "--output", "out")
    assert done.returncode == 0, done.stderr
    config = json.loads((by_table / "out" / "config.json").read_text())
    assert config["model"]["app"] == "clinic.job:app" and config["client"]["lr"] == 0.1
    results = json.loads((by_table / "out" / "results.json").read_text())
    assert results["data"]["dataset"] == "clinic" and len(results["rounds"]) == 2
    broken = fedstream_cli(by_table, "run", "--model.app", "clinic.job:nothing", *flags)
    assert broken.returncode == 2
    assert "app='clinic.job:nothing' is invalid: expected an attribute 'nothing'" in broken.stderr


def test_an_apps_clients_are_the_population_that_dp_charges_for():
    """Regression: with an app, q was clients per round over data.num_clients (default
    100), not over the app's 5 clients: the accountant charged q = 0.03 for rounds that
    sampled at 0.6, and reported far too small an ε."""
    dp_accounting = pytest.importorskip("dp_accounting")
    result = fedstream.simulate(
        app=tiny, privacy={"level": "client", "noise": 1.0, "clip": 1.0}, **nested(**RUN)
    )
    assert result.config.data.num_clients == 5
    accountant = dp_accounting.rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(3 / 5, dp_accounting.GaussianDpEvent(1.0))
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, RUN["rounds"]))
    epsilon = result.reports[-1].metrics["dp_epsilon"]
    assert epsilon == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-3)
