"""The run configuration, by concern: sections, TOML, flags, and what an old or mistyped
key is told."""

import pytest

from fedstream import ConfigError
from fedstream.simulation import SimulationConfig, from_mapping, load_toml
from fedstream.simulation.config import keys, project_settings
from tests.settings import make_config


def test_a_toml_file_has_a_table_per_concern_and_values_are_coerced(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        '[strategy]\nname = "fedprox"\nmu = 0.01\n\n[run]\nrounds = 3\n'
        "clients_per_round = 0.1\n\n[model]\nhidden = [32]\n"
    )
    config = from_mapping(load_toml(path))
    assert config.strategy.name == "fedprox" and config.strategy.hyperparameters == {"mu": 0.01}
    assert config.build_strategy().mu == 0.01
    assert config.model.hidden == (32,) and isinstance(config.run.clients_per_round, float)
    coerced = from_mapping({"run": {"clients_per_round": "20"}, "model": {"hidden": "16,8"}})
    assert coerced.run.clients_per_round == 20 and coerced.model.hidden == (16, 8)
    assert from_mapping({"strategy": {"server_lr": "none"}}).strategy.hyperparameters == {}
    (tmp_path / "bad.toml").write_text("[run]\nrounds = [\n")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_toml(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="an existing TOML file"):
        load_toml(tmp_path / "missing.toml")


def test_an_old_flat_file_is_told_the_key_to_write_instead(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text('strategy = "fedprox"\nmu = 0.01\n')
    with pytest.raises(
        ConfigError,
        match=r"config\.strategy='fedprox' is invalid: expected the key 'strategy\.name' now .* "
        r"under \[strategy\] as name = 'fedprox', as a flag --strategy\.name",
    ):
        from_mapping(load_toml(path))
    with pytest.raises(ConfigError, match=r"dp_noise=1\.5 is invalid: .* 'privacy\.noise'"):
        from_mapping({"dp_noise": 1.5})
    with pytest.raises(ConfigError, match=r"client\.dp_noise=1\.5 .* \(it is 'privacy\.noise'\)"):
        from_mapping({"client": {"dp_noise": 1.5}})


def test_a_mistyped_key_gets_a_did_you_mean():
    with pytest.raises(ConfigError, match=r"client\.lrr=0\.1 .* \(did you mean 'lr'\?\)"):
        from_mapping({"client": {"lrr": 0.1}})
    with pytest.raises(ConfigError, match=r"strategy\.muu=0\.1 .* \(did you mean 'mu'\?\)"):
        from_mapping({"strategy": {"name": "fedprox", "muu": 0.1}})
    with pytest.raises(ConfigError, match=r"privcy=\{\} is invalid: .* \(did you mean 'privacy'"):
        from_mapping({"privcy": {}})


def test_a_strategy_declares_its_own_hyperparameters_with_their_help():
    every = keys()
    assert "strategy.mu" in every and "proximal coefficient" in every["strategy.mu"]
    assert "(fedprox, fednova)" in every["strategy.mu"]
    assert "(fedavgm)" in every["strategy.momentum"]
    with pytest.raises(ConfigError, match=r"strategy\.momentum=0\.5 .* of fedadam: \['beta1',"):
        from_mapping({"strategy": {"name": "fedadam", "momentum": 0.5}})


def test_the_config_round_trips_through_its_dict_and_changes_by_section():
    config = make_config(strategy="fedadam", tau=1e-3, hidden=(16,), clients_per_round=0.25)
    assert from_mapping(config.to_dict()) == config
    changed = config.with_changes(client={"lr": 0.1}, strategy={"beta1": 0.5})
    assert changed.client.lr == 0.1 and changed.strategy.hyperparameters == {
        "tau": 1e-3, "beta1": 0.5,
    }  # fmt: skip
    assert changed.client.local_epochs == config.client.local_epochs
    assert SimulationConfig() == from_mapping({})


def test_a_settings_own_check_is_reported_under_its_key():
    with pytest.raises(ConfigError, match=r"secure\.neighbours=25 is invalid: expected at most"):
        from_mapping({"secure": {"scheme": "secagg+", "neighbours": 25}})
    with pytest.raises(ConfigError, match=r"privacy\.clip=0\.0 is invalid"):
        from_mapping({"privacy": {"level": "client", "clip": 0.0}})


def test_a_projects_pyproject_holds_its_settings_under_tool_fedstream(tmp_path):
    assert project_settings(tmp_path) == {}
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.fedstream.run]\nrounds = 4\n'
    )
    assert from_mapping(project_settings(tmp_path)).run.rounds == 4


def test_client_sampling_follows_privacy_and_refuses_rounds_too_small_for_a_secure_sum():
    assert make_config().round_config().sampling == "fixed"
    assert make_config(dp="client").round_config().sampling == "poisson"
    assert make_config(dp="client", sampling="fixed").round_config().sampling == "fixed"
    with pytest.raises(ConfigError, match=r"run\.sampling='poisson' is invalid: expected 'fixed'"):
        make_config(
            num_clients=5, clients_per_round=3, rounds=4, dp="client",
            secure_aggregation="secagg+",
        )  # fmt: skip
    # 8 of 12 a round: a round of one is a 1e-5 event, and the run goes ahead
    make_config(
        num_clients=12, clients_per_round=8, rounds=2, dp="client", secure_aggregation="secagg+"
    )
    with pytest.raises(ConfigError, match=r"run\.sampling='often' is invalid"):
        make_config(sampling="often")


def test_the_outlier_screen_is_on_by_default_only_in_a_deployment():
    config = SimulationConfig()
    assert config.round_config().outlier_factor is None
    assert config.round_config(deployed=True).outlier_factor == 10.0
    assert config.with_changes(run={"outlier_factor": 0}).round_config(True).outlier_factor is None
    assert config.with_changes(run={"outlier_factor": 3}).round_config().outlier_factor == 3
    # DP and secure sums turn the default off: their clients' updates are shielded
    private = config.with_changes(privacy={"level": "client"})
    assert private.round_config(deployed=True).outlier_factor is None
    with pytest.raises(ConfigError, match=r"run\.outlier_factor=1\.0 is invalid: expected 0"):
        config.with_changes(run={"outlier_factor": 1.0})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"run": {"outlier_factor": 10}, "privacy": {"level": "client"}},
            r"run\.outlier_factor=10\.0 .* breaks DP's sensitivity bound",
        ),
        (
            {"run": {"max_client_weight": 100}, "secure": {"scheme": "secagg+"}},
            r"run\.max_client_weight=100\.0 .* never sees a client's update or weight",
        ),
    ],
)
def test_update_bounds_that_cannot_compose_say_why(changes, message):
    with pytest.raises(ConfigError, match=message):
        SimulationConfig().with_changes(**changes)
