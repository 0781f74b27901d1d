"""LoRA over gRPC: real server and client processes on 127.0.0.1, each client loading the
frozen base itself; with SecAgg+ and client-level DP the deployment ends bit for bit where
its simulation does, having sent only the adapters and the head."""

import pytest

from fedstream import simulate
from fedstream.app import model_params
from tests.apps import tiny_lora
from tests.deploy.harness import deploy_run, write_run

pytestmark = pytest.mark.slow  # a server and eight client processes


def test_lora_with_secure_aggregation_and_dp_deploys_over_grpc_as_it_simulates(tmp_path):
    toml, tokens, config = write_run(
        tmp_path, app="tests.apps.tiny_lora:app", rounds=2, batch_size=16, lr=0.5,
        num_clients=8, clients_per_round=6,
        secure_aggregation="secagg+", dp="client", dp_noise=0.3, dp_clip=1.0,
        dp_secure_noise=False,
    )  # fmt: skip
    final, report = deploy_run(tmp_path, toml, tokens, config)
    simulated = simulate(config)
    assert final.params.bit_equal(simulated.state.params)  # fixed-point sums: exact
    assert report.metrics["dp_epsilon"] == simulated.reports[-1].metrics["dp_epsilon"]
    adapters = model_params(tiny_lora.app.build_model(0))
    assert sorted(final.params) == sorted(adapters)
    assert 0 < report.bytes_up < 40 * len(adapters.to_bytes())  # masked adapters only
