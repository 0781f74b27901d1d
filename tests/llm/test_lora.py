"""LoRA federated: only adapters and head travel, the base never moves, FFA-LoRA averages
exactly where factor averaging does not, and it all composes with the rest."""

import math

import numpy as np
import pytest
import torch

import fedstream
from fedstream.app import model_params
from fedstream.client.base import FitTask
from fedstream.client.torch_trainer import TorchTrainer, frozen_names, load_params
from fedstream.errors import ConfigError, ParamsMismatchError
from fedstream.llm import LoraSettings, adapter_gap, head_only, with_lora
from fedstream.params import Params
from fedstream.types import FitConfig
from tests.apps import tiny_lora
from tests.settings import nested

RUN = {"rounds": 2, "clients_per_round": 3, "local_epochs": 1, "batch_size": 16, "lr": 0.5}


def names(params):
    return sorted(params)


def test_only_the_adapters_and_the_head_are_federated_and_the_base_never_moves():
    module = tiny_lora.app.build_model(0)
    initial = model_params(module)
    assert all(".lora_A." in n or ".lora_B." in n or ".modules_to_save." in n for n in initial)
    assert len([n for n in initial if ".lora_" in n]) == 8  # A and B on query, value × 2
    result = fedstream.simulate(app=tiny_lora.app, **nested(**RUN))
    final = result.state.params
    assert names(final) == names(initial)
    # each client uploads exactly the adapters and the head, in the wire format
    assert result.reports[-1].bytes_up == 3 * len(initial.to_bytes())
    full = model_params(tiny_lora.full.build_model(0))
    assert len(full.to_bytes()) > 300 * len(initial.to_bytes())
    # the adapters learnt; the frozen base is where every process builds it
    assert not np.array_equal(final.flat(), initial.flat())
    served = tiny_lora.app.build_model(0)
    load_params(served, final)
    fresh = tiny_lora.app.build_model(0)
    for name in frozen_names(fresh):
        assert torch.equal(served.get_parameter(name), fresh.get_parameter(name)), name


def test_params_that_name_a_frozen_entry_are_refused_when_loaded():
    module = tiny_lora.app.build_model(0)
    params = model_params(module)
    base = frozen_names(module)[0]
    extra = Params({**params, base: module.get_parameter(base).detach().numpy()})
    with pytest.raises(ParamsMismatchError, match="model params"):
        load_params(module, extra)


def trained(app, clients=("a", "b")):
    """One local fit of each of two clients from the same global adapters: their params
    after it (the frozen A included, for the gap), and their example counts."""
    module = app.build_model(0)
    start = model_params(module)
    frozen_a = {n: module.get_parameter(n).detach().numpy().copy() for n in frozen_names(module)}
    trainer = TorchTrainer(module, "classification")
    data = app.clients()
    outcome, weights = [], []
    for k, client in enumerate(sorted(data)[:2]):
        task = FitTask(client, 1, FitConfig(seed=k, lr=0.5, batch_size=8, local_epochs=5))
        update = trainer.fit(start, task, data[client])
        after = start + update.payload
        outcome.append(Params({**after, **{n: a for n, a in frozen_a.items() if "lora_A" in n}}))
        weights.append(update.weight)
    return outcome, weights


def test_ffa_lora_averages_the_adapters_exactly_and_factor_averaging_does_not():
    averaged, weights = trained(tiny_lora.app)
    gap = adapter_gap(averaged, weights)
    # mean(B)·mean(A) is not mean(B·A): 4.2e-5 here, after five local epochs from B = 0
    # (the gap grows with B; the benchmark measures it over whole runs), against 1.3e-16
    assert gap > 1e-5
    exact, weights = trained(tiny_lora.ffa)
    assert adapter_gap(exact, weights) < 1e-12  # A is common, so mean(B)·A = mean(B·A)
    module = tiny_lora.ffa.build_model(0)
    shared = model_params(module)
    assert not any(".lora_A." in n for n in shared)  # FFA-LoRA sends B alone
    assert sum(".lora_B." in n for n in shared) == 4


def test_adapter_gap_is_the_relative_frobenius_distance_worked_by_hand():
    # client 1: B·A = [[1, 0], [0, 0]]; client 2: B·A = [[0, 0], [0, 1]]
    one = Params({"m.lora_A.w": np.array([[1.0, 0.0]]), "m.lora_B.w": np.array([[1.0], [0.0]])})
    two = Params({"m.lora_A.w": np.array([[0.0, 1.0]]), "m.lora_B.w": np.array([[0.0], [1.0]])})
    # exact mean = diag(.5, .5) (norm √.5); mean(B)·mean(A) = .25 everywhere
    # difference [[.25, -.25], [-.25, .25]] has norm .5, so the gap is .5/√.5 = √.5
    assert adapter_gap([one, two], [1, 1]) == pytest.approx(math.sqrt(0.5), rel=1e-12)


def test_head_only_trains_the_head_alone():
    module = tiny_lora.head.build_model(0)
    assert sorted(model_params(module)) == ["model.classifier.bias", "model.classifier.weight"]
    with pytest.raises(ConfigError, match=r"^head=\['nope'\] is invalid: expected a list of"):
        head_only(tiny_lora.tiny_bert(), head=["nope"])
    with pytest.raises(ConfigError, match=r"^head=\[\] is invalid: expected the name of this"):
        head_only(tiny_lora.tiny_bert(), head=[])


def test_a_lora_head_the_model_lacks_is_named():
    with pytest.raises(ConfigError, match=r"^lora\.head=\('score',\) is invalid: expected a list"):
        with_lora(tiny_lora.tiny_bert(), LoraSettings(head=("score",)))


def test_a_lora_run_composes_with_dp_secure_sums_and_compression():
    secure_dp = fedstream.simulate(
        app=tiny_lora.app,
        privacy={"level": "client", "noise": 0.5, "clip": 1.0},
        secure={"scheme": "secagg+"},
        **nested(**RUN | {"clients_per_round": 6}),  # Poisson at q = 6/8: never under 2
    )
    assert secure_dp.reports[-1].metrics["dp_epsilon"] > 0
    assert np.isfinite(secure_dp.state.params.flat()).all()
    compressed = fedstream.simulate(
        app=tiny_lora.ffa, compression={"codec": "topk:0.25"}, **nested(**RUN)
    )
    plain = fedstream.simulate(app=tiny_lora.ffa, **nested(**RUN))
    assert compressed.reports[-1].bytes_up < plain.reports[-1].bytes_up / 2
    assert np.isfinite(compressed.state.params.flat()).all()


def test_a_lora_run_resumes_bit_for_bit(tmp_path):
    # BERT's own dropout (0.1) draws in training: resume must replay it
    straight = fedstream.simulate(app=tiny_lora.app, **nested(**RUN | {"rounds": 3}))
    fedstream.simulate(app=tiny_lora.app, output_dir=tmp_path / "run", **nested(**RUN))
    resumed = fedstream.simulate(
        app=tiny_lora.app, output_dir=tmp_path / "run", resume=True, **nested(**RUN | {"rounds": 3})
    )
    assert resumed.state.params.bit_equal(straight.state.params)


@pytest.mark.slow
def test_a_lora_app_on_worker_processes_ends_where_the_in_process_run_does():
    alone = fedstream.simulate(app="tests.apps.tiny_lora:app", **nested(**RUN))
    spread = fedstream.simulate(
        app="tests.apps.tiny_lora:app", **nested(executor="processes", workers=2, **RUN)
    )
    assert spread.state.params.bit_equal(alone.state.params)


def test_a_causal_decoder_learns_next_characters_with_lora():
    result = fedstream.simulate(
        app=tiny_lora.llama, **nested(**RUN | {"rounds": 3, "clients_per_round": 4})
    )
    losses = [r.metrics["fed_loss"] for r in result.reports]
    assert losses[-1] < math.log(80) - 0.5 and losses[-1] < losses[0] - 1.0
    # the adapters on q_proj and v_proj, and the language-model head trained in full
    assert {n.split(".")[-4] for n in result.state.params if ".lora_" in n} == {"q_proj", "v_proj"}
    assert [n for n in result.state.params if ".lora_" not in n] == [
        "model.base_model.model.lm_head.modules_to_save.default.weight"
    ]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rank": 0}, r"^lora\.rank=0 is invalid: expected a whole number >= 1$"),
        ({"alpha": 0.5}, r"^lora\.alpha=0\.5 is invalid: expected a whole number >= 1$"),
        ({"dropout": 1.0}, r"^lora\.dropout=1\.0 is invalid: expected a probability in \[0, 1\)$"),
        ({"method": "fa"}, r"^lora\.method='fa' is invalid: .*\(did you mean 'ffa'\?\)$"),
        ({"target_modules": "query"}, r"^lora\.target_modules='query' is invalid: expected a list"),
    ],
)
def test_bad_lora_settings_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        LoraSettings(**settings)


def test_target_modules_the_model_lacks_are_named_with_the_ones_it_has():
    with pytest.raises(
        ConfigError,
        match=r"^lora\.target_modules=\['q_proj'\] is invalid: expected names of linear "
        r"modules of this model: \['classifier', 'dense', 'key', 'query', 'value'\]$",
    ):
        with_lora(tiny_lora.tiny_bert(), LoraSettings(target_modules=("q_proj",)))


def test_the_vectorised_trainer_declines_transformers_and_frozen_bases_and_says_why():
    with pytest.raises(ConfigError, match=r"Hugging Face transformers inside .* 'model'"):
        fedstream.simulate(app=tiny_lora.full, **nested(trainer="vectorized", **RUN))
    with pytest.raises(ConfigError, match=r"a model without frozen parameters"):
        fedstream.simulate(app=tiny_lora.app, **nested(trainer="vectorized", **RUN))
    auto = fedstream.simulate(app=tiny_lora.full, **nested(**RUN | {"rounds": 1}))
    assert auto.trainer.startswith("sequential (auto: the vectorised trainer needs a model")
