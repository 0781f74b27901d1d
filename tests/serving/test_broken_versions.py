"""A serving process that a broken model version cannot freeze (issue 18, item 10): a
publish is built and run once before it is accepted, and a broken version that reaches the
store anyway is passed over, reported, and never blocks a newer good one."""

import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from fedstream import Params, simulate
from fedstream.store import RunStore
from tests.deploy.harness import free_port, wait_until_up
from tests.settings import nested

pytestmark = pytest.mark.slow  # real processes and whole runs

BEARER = {"authorization": "Bearer s3cret"}


@pytest.fixture
def publishing(tmp_path):
    """A serving process with a publish token over an empty store, and a trained run's
    architecture and params to publish."""
    simulate(output_dir=tmp_path / "run", **nested(num_clients=10, clients_per_round=5, rounds=1))
    meta, blob = RunStore(tmp_path / "store.sqlite").model("run", 1)
    token_file = tmp_path / "publish.token"
    token_file.write_text("s3cret\n")
    store = tmp_path / "serving.sqlite"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fedstream.cli", "serve", "--store", str(store), "--run",
         "remote", "--port", str(port), "--publish-token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, process)
    yield url, RunStore(store), meta["architecture"], Params.from_bytes(blob), process
    process.kill()
    process.wait()


def push(url, version, arch, params):
    return httpx.post(
        f"{url}/v1/models/publish",
        content=params.to_bytes(),
        headers={
            **BEARER,
            "x-model-version": str(version),
            "x-model-architecture": __import__("json").dumps(arch),
        },
    )


def wait_for_version(url, version):
    deadline = time.monotonic() + 10
    while (ready := httpx.get(f"{url}/readyz")).status_code != 200 or ready.json()[
        "version"
    ] != version:
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.05)
    return ready.json()


def test_a_publish_that_does_not_fit_its_architecture_is_refused(publishing):
    url, _, arch, params, _ = publishing
    assert push(url, 1, arch, params).status_code == 201
    wait_for_version(url, 1)
    names = list(params)
    cut = Params({n: params[n] for n in names[:-1]})  # an entry missing
    wrong = push(url, 2, arch, cut)
    assert wrong.status_code == 422 and "model version 2:" in wrong.json()["detail"]
    assert "not published" in wrong.json()["detail"]
    poisoned = push(url, 3, arch, params.map(lambda a: np.full_like(a, np.nan)))
    assert poisoned.status_code == 422
    assert "a forward pass on a zero input is not finite" in poisoned.json()["detail"]
    unknown = push(url, 4, {**arch, "model": "no-such-model"}, params)
    assert unknown.status_code == 422
    listed = [m["version"] for m in httpx.get(f"{url}/v1/models").json()["versions"]]
    assert listed == [1]


def test_a_broken_version_in_the_store_is_passed_over_and_a_newer_good_one_served(publishing):
    url, store, arch, params, process = publishing
    assert push(url, 1, arch, params).status_code == 201
    wait_for_version(url, 1)
    # a trainer writing straight into the store is not checked by the publish route
    store.publish_model("remote", 2, {**arch, "in_features": 3}, {}, params.to_bytes())
    deadline = time.monotonic() + 10
    while not (ready := httpx.get(f"{url}/readyz").json())["broken_versions"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert ready["ready"] is True and ready["version"] == 1  # the good one goes on serving
    # the loader names the entry and both shapes
    assert "has shape (64, 64), expected (64, 3)" in ready["broken_versions"]["2"]
    metrics = httpx.get(f"{url}/metrics").text
    assert "fedstream_broken_versions 1" in metrics
    pinned = httpx.post(f"{url}/v1/models/pin", json={"version": 2}, headers=BEARER)
    assert pinned.status_code == 422 and "model version 2" in pinned.json()["detail"]
    # a newer good version is still picked up
    assert push(url, 3, arch, params * 0.5).status_code == 201
    assert wait_for_version(url, 3)["broken_versions"] == {"2": ready["broken_versions"]["2"]}
    answer = httpx.post(f"{url}/v1/predict", json={"inputs": np.ones((1, 64)).tolist()})
    assert answer.status_code == 200 and answer.json()["version"] == 3
    process.kill()
    _, said = process.communicate()
    assert said.count("passing over model version 2") == 1  # logged once, not every poll
