"""The inference server, started for real (uvicorn on 127.0.0.1) over a real run store:
predictions that match the model they name, follow and pin, swaps under load with no
failed or mixed answers, and bad requests."""

import concurrent.futures
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from fedstream import Params, simulate
from fedstream.store import RunStore
from tests.deploy.harness import free_port, wait_until_up
from tests.settings import nested

pytestmark = pytest.mark.slow  # real processes and whole runs


def start_serving(store: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``fedstream serve`` process on a free loopback port for run ``run`` of
    ``store``, once it is ready; and its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fedstream.cli", "serve", "--store", str(store), "--run", "run",
         "--port", str(port), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serving")
    simulate(output_dir=folder / "run", **nested(num_clients=10, clients_per_round=5, rounds=3))
    store = folder / "store.sqlite"
    process, url = start_serving(store, "--max-body-bytes", "100000")
    yield url, RunStore(store)
    process.kill()
    process.wait()


def numpy_mlp(params: Params, inputs: np.ndarray) -> np.ndarray:
    """The MLP with ``params`` run in plain numpy, independently of the server's model
    building and forward pass: Linear layers with ReLU between them."""
    layers = sorted({name.split(".")[0] for name in params}, key=int)
    x = inputs.astype(np.float64)
    for i, layer in enumerate(layers):
        x = x @ params[f"{layer}.weight"].astype(np.float64).T + params[f"{layer}.bias"]
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x


def offline(store: RunStore, version: int, inputs: np.ndarray) -> np.ndarray:
    """The MLP of ``version`` run in plain numpy from its stored params (``numpy_mlp``)."""
    meta, blob = store.model("run", version)
    assert meta["architecture"]["model"] == "mlp"
    return numpy_mlp(Params.from_bytes(blob), inputs)


def test_predictions_match_the_model_version_they_name(served):
    url, store = served
    rng = np.random.default_rng(0)
    inputs = rng.random((3, 64)).astype(np.float32)
    answer = httpx.post(f"{url}/v1/predict", json={"inputs": inputs.tolist()}).json()
    assert answer["version"] == 3
    expected = offline(store, 3, inputs)
    np.testing.assert_allclose(answer["outputs"], expected, rtol=1e-5, atol=1e-6)
    assert answer["predictions"] == expected.argmax(1).tolist()
    # the compact binary form both ways
    body = Params({"inputs": inputs}).to_bytes()
    response = httpx.post(
        f"{url}/v1/predict", content=body,
        headers={"content-type": "application/octet-stream", "accept": "application/octet-stream"},
    )  # fmt: skip
    assert response.status_code == 200 and response.headers["x-model-version"] == "3"
    binary = Params.from_bytes(response.content)["outputs"]
    np.testing.assert_array_equal(binary, np.array(answer["outputs"], np.float32))  # same pass
    np.testing.assert_allclose(binary, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "status", "detail"),
    [
        ({"json": {"inputs": [[1.0, 2.0]]}}, 422, "shape (1, 2), expected (rows ≥ 1, 64)"),
        ({"json": {"rows": []}}, 422, 'body must be JSON {"inputs"'),
        ({"content": b"not json"}, 422, "body must be JSON"),
        ({"content": b'{"inputs": [[' + b"NaN, " * 63 + b"NaN]]}"}, 422, "NaN or Inf"),
        (
            {"content": Params({"inputs": np.zeros((1, 64))}).to_bytes(),
             "headers": {"content-type": "application/octet-stream"}},
            422, "inputs has dtype float64, expected float32",
        ),
        (
            {"content": b"\x00" * 200_000, "headers": {"content-type": "application/octet-stream"}},
            413, "exceeds 100000",
        ),
        # hostile JSON: nesting deeper than any parser's stack, a 400-digit number, booleans
        ({"content": b'{"inputs": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"}, 422, "nested too"),
        ({"content": b'{"inputs": [[1' + b"0" * 400 + b"]]}"}, 422, 'body must be JSON'),
        ({"json": {"inputs": [[True] * 64]}}, 422, "numbers, not booleans"),
        ({"json": {"inputs": [[1.5] * 63 + [False]]}}, 422, "numbers, not booleans"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_with_what_was_expected(served, kwargs, status, detail):
    url, _ = served
    response = httpx.post(f"{url}/v1/predict", **kwargs)
    assert response.status_code == status
    assert detail in response.json()["detail"]
    assert httpx.get(f"{url}/healthz").status_code == 200  # and it keeps serving


def test_pin_rollback_unknown_version_and_metrics(served):
    url, store = served
    assert httpx.post(f"{url}/v1/models/pin", json={"version": 42}).status_code == 404
    for bad in (b'{"version": 1e400}', b'{"version": 123456789012345678901}',
                b'{"version": -5}', b'{"version": true}', b"[" * 30_000):  # fmt: skip
        refused = httpx.post(f"{url}/v1/models/pin", content=bad)
        assert refused.status_code == 422, (bad[:40], refused.text)
    assert httpx.post(f"{url}/v1/models/pin", json={"version": 1}).json()["current"] == 1
    inputs = np.ones((1, 64), np.float32)
    answer = httpx.post(f"{url}/v1/predict", json={"inputs": inputs.tolist()}).json()
    assert answer["version"] == 1
    np.testing.assert_allclose(answer["outputs"], offline(store, 1, inputs), rtol=1e-5, atol=1e-6)
    models = httpx.get(f"{url}/v1/models").json()
    assert [m["version"] for m in models["versions"]] == [1, 2, 3] and models["pinned"] == 1
    httpx.post(f"{url}/v1/models/follow")
    deadline = time.monotonic() + 5
    while httpx.get(f"{url}/v1/models").json()["current"] != 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    text = httpx.get(f"{url}/metrics").text
    assert 'fedstream_requests_total{status="200"}' in text
    assert "fedstream_model_version 3" in text and "fedstream_request_seconds_bucket" in text
    # the dashboard rides on the serving port, with this process's traffic
    assert "fedstream dashboard" in httpx.get(f"{url}/dashboard").text
    serving = httpx.get(f"{url}/dashboard/api/serving").json()
    assert serving["run"] == "run" and serving["version served"] == 3
    assert serving["requests 200"] >= 1 and serving["model swaps"] >= 1
    assert [r["id"] for r in httpx.get(f"{url}/dashboard/api/runs").json()] == ["run"]


def test_new_versions_are_swapped_in_under_load_with_no_failed_or_mixed_answer(served):
    url, store = served
    base = simulate(**nested(num_clients=10, clients_per_round=5, rounds=1)).state.params
    meta, _ = store.model("run", 3)
    inputs = np.random.default_rng(1).random((2, 64)).astype(np.float32)

    def publish(versions):
        for v in versions:
            scaled = base * (1.0 + 0.1 * v)
            store.publish_model("run", v, meta["architecture"], {}, scaled.to_bytes())
            time.sleep(0.2)

    def ask(_):
        response = httpx.post(f"{url}/v1/predict", json={"inputs": inputs.tolist()}, timeout=10)
        return response.status_code, response.json()

    with concurrent.futures.ThreadPoolExecutor(max_workers=9) as pool:
        publisher = pool.submit(publish, range(4, 9))
        answers = list(pool.map(ask, range(400)))
        publisher.result()
    assert all(status == 200 for status, _ in answers)
    seen = {a["version"] for _, a in answers}
    assert len(seen) >= 2  # the answers span swaps
    for version in seen:
        expected = offline(store, version, inputs)
        for _, answer in answers:
            if answer["version"] == version:  # every answer is one version's, whole
                np.testing.assert_allclose(answer["outputs"], expected, rtol=1e-5, atol=1e-5)
    assert store.publish_model("run", 4, meta["architecture"], {}, b"other") is False  # immutable


def test_personalised_evaluation_reports_both_models_per_client():
    result = simulate(**nested(num_clients=10, clients_per_round=5, rounds=2, personalize_epochs=2))
    report = result.reports[-1]
    assert len(report.evaluations) == 10
    for metrics in report.evaluations.values():
        assert {"accuracy", "personal_accuracy", "loss", "personal_loss"} <= set(metrics)
    # the personalised model is better on the clients' own (label-skewed) data, on average
    assert report.metrics["fed_personal_loss"] < report.metrics["fed_loss"]
    # the federated figure is the example-weighted mean of the per-client ones
    from fedstream.simulation import build

    setup = build(result.config)
    sizes = {c: d.num_test for c, d in setup.dataset.clients.items()}
    weighted = sum(sizes[c] * m["personal_accuracy"] for c, m in report.evaluations.items())
    assert report.metrics["fed_personal_accuracy"] == pytest.approx(weighted / sum(sizes.values()))


@pytest.mark.parametrize(
    "mode", [[], ["--run.mode", "async", "--clock.speeds", "lognormal"]], ids=["sync", "async"]
)
def test_run_with_serve_serves_each_new_round_while_training(tmp_path, mode):
    # an asynchronous run publishes a version at every server step, as a round does
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fedstream.cli", "run", "--run.rounds", "40", "--quiet",
         "--output", str(tmp_path / "run"), "--serve", str(port), "--run.evaluate-every", "0",
         *mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            if response.status_code == 200:
                seen.add(response.json()["version"])
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    assert process.wait(timeout=60) == 0, process.stderr.read()
    assert len(seen) >= 2 and max(seen) <= 40  # it moved to newer rounds as they came


def test_a_training_process_publishes_to_a_serving_process_elsewhere(tmp_path):
    from fedstream.serving.publish import PublishTarget, publish

    token_file = tmp_path / "publish.token"
    token_file.write_text("s3cret\n")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fedstream.cli", "serve", "--store",
         str(tmp_path / "serving.sqlite"), "--run", "remote", "--port", str(port),
         "--publish-token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        assert httpx.get(f"{url}/readyz").status_code == 503  # nothing published yet
        target = PublishTarget(url, "s3cret")
        result = simulate(
            publish_to=target, **nested(num_clients=10, clients_per_round=5, rounds=3)
        )
        deadline = time.monotonic() + 10
        while (
            httpx.get(f"{url}/readyz").status_code != 200
            or httpx.get(f"{url}/readyz").json()["version"] != 3
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        inputs = np.ones((1, 64), np.float32)
        answer = httpx.post(f"{url}/v1/predict", json={"inputs": inputs.tolist()}).json()
        import torch

        from fedstream.models import build_model

        module = build_model("mlp", 64, 10, 0, None, torch.float32)
        module.load_state_dict(
            {n: torch.from_numpy(a.copy()) for n, a in result.state.params.items()}
        )
        expected = module(torch.from_numpy(inputs)).detach().numpy()
        np.testing.assert_allclose(answer["outputs"], expected, rtol=1e-5, atol=1e-6)
        import urllib.error

        with pytest.raises(urllib.error.HTTPError, match="401"):
            publish(PublishTarget(url, "wrong"), 4, {}, {}, result.state.params.to_bytes())
        again = (result.state.params * 2.0).to_bytes()
        assert publish(target, 3, {"model": "mlp"}, {}, again) is False  # immutable
        # with a token, routes that change what is served need it: nobody rolls back
        assert httpx.post(f"{url}/v1/models/pin", json={"version": 1}).status_code == 401
        assert httpx.post(f"{url}/v1/models/follow").status_code == 401
        bearer = {"authorization": "Bearer s3cret"}
        pinned = httpx.post(f"{url}/v1/models/pin", json={"version": 1}, headers=bearer)
        assert pinned.status_code == 200 and pinned.json()["current"] == 1
        assert httpx.post(f"{url}/v1/models/follow", headers=bearer).status_code == 200
        with pytest.raises(urllib.error.HTTPError, match="422"):  # a version out of range
            publish(target, 10**22, {"model": "mlp"}, {}, again)
        with pytest.raises(urllib.error.HTTPError, match="422"):
            publish(target, -5, {"model": "mlp"}, {}, again)
    finally:
        process.kill()
        process.wait()


def test_models_are_pushed_over_tls_and_only_to_a_certificate_the_pusher_trusts(tmp_path):
    from fedstream.serving.publish import PublishTarget, publish
    from tests.conftest import make_certificates

    ca, cert, key, _, _ = make_certificates(tmp_path)
    for name, pem in (("ca.pem", ca), ("cert.pem", cert), ("key.pem", key)):
        (tmp_path / name).write_bytes(pem)
    (tmp_path / "publish.token").write_text("s3cret\n")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fedstream.cli", "serve", "--store",
         str(tmp_path / "serving.sqlite"), "--run", "remote", "--port", str(port),
         "--publish-token-file", str(tmp_path / "publish.token"),
         "--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    import ssl

    trust = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    try:
        wait_until_up(url, process, verify=trust)
        blob = Params(
            {"0.weight": np.ones((2, 3), np.float32), "0.bias": np.zeros(2, np.float32)}
        ).to_bytes()
        arch = {"model": "linear", "in_features": 3, "out_features": 2, "seed": 0}
        arch |= {"dtype": "float32", "hidden": None}
        import urllib.error

        with pytest.raises(urllib.error.URLError) as refused:  # not a CA it trusts
            publish(PublishTarget(url, "s3cret"), 1, arch, {}, blob)
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
        trusted = PublishTarget(url, "s3cret", str(tmp_path / "ca.pem"))
        assert publish(trusted, 1, arch, {}, blob) is True
        listed = httpx.get(f"{url}/v1/models", verify=trust).json()
        assert [m["version"] for m in listed["versions"]] == [1]
        with pytest.raises(httpx.RemoteProtocolError):  # plain HTTP gets no answer
            httpx.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        process.kill()
        process.wait()


def test_bad_publish_and_tls_settings_are_named():
    from fedstream.errors import ConfigError
    from fedstream.serving.publish import PublishTarget

    with pytest.raises(ConfigError, match="publish_to='ftp://x' is invalid: expected an http"):
        PublishTarget("ftp://x", "t")
    with pytest.raises(ConfigError, match=r"publish_ca='ca.pem'.*https:// publish URL"):
        PublishTarget("http://x", "t", "ca.pem")
    done = subprocess.run(
        [sys.executable, "-m", "fedstream.cli", "serve", "--store", "s.sqlite", "--run", "r",
         "--tls-cert", "cert.pem"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--tls-key" in done.stderr and "HTTPS needs both" in done.stderr


def test_serving_on_a_public_address_without_a_token_is_refused(served):
    _, store = served
    done = subprocess.run(
        [sys.executable, "-m", "fedstream.cli", "serve", "--store", str(store.path), "--run",
         "run", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--host='0.0.0.0' is invalid: expected 127.0.0.1 or ::1" in done.stderr
