"""A LoRA run served for real (``fedstream serve`` on 127.0.0.1): the server merges the
adapters into the base and answers as the unmerged model does; token ids from the
network are bounded before they reach the model."""

import subprocess
import sys

import httpx
import numpy as np
import pytest
import torch

from fedstream import Params, simulate
from fedstream.client.torch_trainer import load_params
from fedstream.store import RunStore
from tests.apps import tiny_lora
from tests.deploy.harness import free_port, wait_until_up
from tests.settings import nested

pytestmark = pytest.mark.slow  # a whole run and a real server process


def test_a_served_lora_model_merges_its_adapters_and_bounds_its_token_ids(tmp_path):
    run = {"rounds": 2, "clients_per_round": 3, "lr": 0.5, "batch_size": 16}
    simulate(app="tests.apps.tiny_lora:app", output_dir=tmp_path / "run", **nested(**run))
    store = RunStore(tmp_path / "store.sqlite")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fedstream.cli", "serve", "--store", str(store.path),
         "--run", "run", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        x = np.asarray(tiny_lora.app.heldout[0][:4])  # type: ignore[index]
        answer = httpx.post(f"{url}/v1/predict", json={"inputs": x.tolist()}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        # the reference: a fresh model with the adapters beside the base (peft's own
        # forward, not the merged weights the server runs)
        _, blob = store.model("run", body["version"])
        reference = tiny_lora.app.build_model(0)
        load_params(reference, Params.from_bytes(blob))
        reference.eval()
        with torch.no_grad():
            expected = reference(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(np.array(body["outputs"]), expected, rtol=1e-5, atol=1e-5)
        assert body["predictions"] == expected.argmax(1).tolist()

        for bad, detail in [
            (x * 0 + tiny_lora.VOCAB, f"expected [0, {tiny_lora.VOCAB})"),
            (x * 0 - 1, "inputs are token ids in [-1, -1]"),
            (x + 0.5, "inputs must be whole numbers (int64)"),
        ]:
            refused = httpx.post(f"{url}/v1/predict", json={"inputs": bad.tolist()}, timeout=30)
            assert refused.status_code == 422 and detail in refused.text, refused.text
        again = httpx.post(f"{url}/v1/predict", json={"inputs": x.tolist()}, timeout=30)
        assert again.json()["outputs"] == body["outputs"]
    finally:
        process.kill()
        process.wait()
