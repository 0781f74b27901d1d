"""Serving a named client's personal model, with a real ``fedstream serve`` process: its
own head over the global body (FedPer, from a simulated run's checkpoint), and Ditto's
whole personal model (from a client's own state folder, as a deployed client keeps it)."""

import subprocess
import sys

import httpx
import numpy as np
import pytest

from fedstream import Params, simulate
from fedstream.client.algorithms import PERSONAL_MODEL
from fedstream.client.local import LOCAL
from fedstream.client.state import DiskClientState
from fedstream.store import RunStore
from fedstream.store.checkpoint import newest_intact_checkpoint
from tests.deploy.harness import free_port
from tests.serving.test_serving import numpy_mlp, start_serving
from tests.settings import nested

pytestmark = pytest.mark.slow  # real processes and whole runs

RUN = {"num_clients": 10, "clients_per_round": 5, "rounds": 3}


def answer(url: str, inputs: np.ndarray) -> dict:
    return httpx.post(f"{url}/v1/predict", json={"inputs": inputs.tolist()}).json()


def test_a_fedper_clients_head_is_served_over_the_newest_global_body(tmp_path):
    simulate(output_dir=tmp_path / "run", **nested(personal=("4",), **RUN))
    store = RunStore(tmp_path / "store.sqlite")
    clients = newest_intact_checkpoint(tmp_path / "run" / "checkpoints").clients
    client = sorted(clients)[0]
    _, blob = store.model("run", 3)
    body = Params.from_bytes(blob)
    theirs = Params({**body, **clients[client][LOCAL]})
    inputs = np.random.default_rng(0).random((4, 64)).astype(np.float32)
    process, url = start_serving(tmp_path / "store.sqlite", "--client", client)
    try:
        served = answer(url, inputs)
        assert served["version"] == 3
        np.testing.assert_allclose(
            served["outputs"], numpy_mlp(theirs, inputs), rtol=1e-5, atol=1e-6
        )
        # the server's own head is its initial one: the global model answers otherwise
        assert not np.allclose(served["outputs"], numpy_mlp(body, inputs), atol=1e-3)
        assert httpx.get(f"{url}/v1/models").json()["client"] == client
    finally:
        process.kill()
        process.wait()


def test_a_ditto_clients_own_model_is_served_from_its_state_folder(tmp_path):
    simulate(output_dir=tmp_path / "run", **nested(strategy="ditto", **RUN))
    clients = newest_intact_checkpoint(tmp_path / "run" / "checkpoints").clients
    client = sorted(clients)[0]
    folder = tmp_path / "fedstream-state" / client  # what a deployed client keeps
    DiskClientState(folder).save(clients[client])
    inputs = np.random.default_rng(1).random((4, 64)).astype(np.float32)
    process, url = start_serving(
        tmp_path / "store.sqlite", "--client", client, "--client-state", str(folder)
    )
    try:
        served = answer(url, inputs)
        own = clients[client][PERSONAL_MODEL]
        np.testing.assert_allclose(served["outputs"], numpy_mlp(own, inputs), rtol=1e-5, atol=1e-6)
    finally:
        process.kill()
        process.wait()


def test_a_client_without_a_model_of_its_own_is_refused_before_serving(tmp_path):
    simulate(output_dir=tmp_path / "run", **nested(**RUN))  # FedAvg: clients keep nothing
    store = str(tmp_path / "store.sqlite")

    def refused(*extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "fedstream.cli", "serve", "--store", store, "--run", "run",
             "--port", str(free_port()), *extra],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode != 0
        return done.stderr

    assert "--client='client-01' is invalid: expected a client with a model of its own in the " \
        "newest checkpoint of" in refused("--client", "client-01")  # fmt: skip
    assert "--client=None is invalid: expected the client whose --client-state this is" in (
        refused("--client-state", str(tmp_path))
    )
    assert f"--client-state='{tmp_path / 'none'}' is invalid: expected a client's state folder" in (
        refused("--client", "client-01", "--client-state", str(tmp_path / "none"))
    )
