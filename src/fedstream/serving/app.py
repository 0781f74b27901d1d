"""Real-time inference with the freshest global model (FastAPI on uvicorn).

- The model comes from the run store's registry (``RunStore.models``). With ``follow`` a
  background thread polls for newer versions and swaps each in. A swap replaces one
  reference, and each micro-batch takes that reference once at its start. So no request
  fails during a swap, and no request is answered by a mix of two versions; every answer
  names its version.
- Requests are **micro-batched**: concurrent requests are joined into one forward pass of
  at most ``max_batch`` rows, waiting at most ``max_wait_ms`` for company. The pass runs
  in ``torch.inference_mode`` on one worker thread with ``threads`` torch threads.
- API: ``POST /v1/predict``, ``GET /v1/models``, ``POST /v1/models/pin`` and
  ``POST /v1/models/follow``, plus ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus
  text format).
  - ``/v1/predict`` takes JSON ``{"inputs": [[…], …]}``, or the compact binary form:
    fedstream's Params wire format (safetensors-compatible) with one entry ``inputs``,
    sent as ``application/octet-stream``.
  - It answers JSON by default, or the same binary form with an ``outputs`` entry when
    asked with ``Accept: application/octet-stream``.
- Bad input gets a 422 that says what was expected. A body above ``max_body_bytes`` is
  refused (413) before it is read whole. An unknown version is a 404.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from fedstream.app import is_torch, load_app
from fedstream.errors import ConfigError, WireFormatError
from fedstream.models import build_model
from fedstream.params import Params
from fedstream.store.runs import RunStore

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class LoadedModel:
    """One immutable model version, ready to run."""

    version: int
    module: torch.nn.Module
    architecture: Mapping[str, Any]
    metrics: Mapping[str, float]

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """The shape of one input row, or ``None`` when the run did not record it."""
        if "in_features" in self.architecture:
            return (int(self.architecture["in_features"]),)
        shape = self.architecture.get("input_shape")
        return tuple(int(n) for n in shape) if shape is not None else None

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(str(self.architecture["dtype"]))


def load_model(
    store: RunStore, run_id: str, version: int | None, app: str | None = None
) -> LoadedModel:
    """Version ``version`` (the newest for ``None``) of ``run_id``'s model, rebuilt from its
    architecture: a built-in model, or the run's app (``app`` names it for a run whose
    app was a Python object)."""
    meta, blob = store.model(run_id, version)
    arch = meta["architecture"]
    if "model" in arch:
        dtype = torch.float64 if arch["dtype"] == "float64" else torch.float32
        hidden = tuple(arch["hidden"]) if arch.get("hidden") else None
        module = build_model(
            arch["model"], arch["in_features"], arch["out_features"], arch["seed"], hidden, dtype
        )
    else:
        path = app or arch.get("app")
        if path is None:
            raise ConfigError(
                "--app", None, f"the app that made run {run_id!r} (it ran from a Python object)"
            )
        module = load_app(path).build_model(int(arch["seed"]))
        if not is_torch(module):
            raise ConfigError("--app", path, "an app with a PyTorch model (serving runs torch)")
    params = Params.from_bytes(blob)
    module.load_state_dict({n: torch.from_numpy(np.array(a)) for n, a in params.items()})
    module.eval()
    return LoadedModel(meta["version"], module, arch, meta["metrics"])


@dataclass
class Stats:
    """Counters for ``/metrics``."""

    requests: dict[int, int] = field(default_factory=dict)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_S))
    latency_sum: float = 0.0
    latency_count: int = 0
    swaps: int = 0
    batches: int = 0
    batched_rows: int = 0

    def observe(self, status: int, seconds: float) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1
        if status == 200:
            self.latency_sum += seconds
            self.latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS_S):
                if seconds <= bound:
                    self.latency_buckets[i] += 1


class Server:
    """The state behind the app: the current model, the follower, the batcher."""

    def __init__(
        self,
        store_path: str | Path,
        run_id: str,
        *,
        version: int | None = None,
        follow: bool = True,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        max_body_bytes: int = 1 << 20,
        threads: int = 1,
        poll_s: float = 0.2,
        publish_token: str | None = None,
        max_publish_bytes: int = 1 << 30,
        app: str | None = None,
    ) -> None:
        self.store = RunStore(store_path)
        self.app = app  # the app that made the run, when it does not name one itself
        self.publish_token = publish_token
        self.max_publish_bytes = max_publish_bytes
        self.run_id = run_id
        self.pinned = version
        self.follow = follow and version is None
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.max_body_bytes = max_body_bytes
        self.poll_s = poll_s
        self.stats = Stats()
        self.current: LoadedModel | None = None
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[Any]]] | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, initializer=torch.set_num_threads,
                                          initargs=(threads,))  # fmt: skip
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- models ------------------------------------------------------------------------
    def swap_to(self, version: int | None) -> LoadedModel:
        loaded = load_model(self.store, self.run_id, version, self.app)
        with self._lock:
            if self.current is None or self.current.version != loaded.version:
                self.stats.swaps += self.current is not None
                self.current = loaded  # one reference: a batch sees the old or the new
        return loaded

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_s):
            if not self.follow:
                continue
            try:
                newest = self.store.models(self.run_id)
                if newest and (
                    self.current is None or newest[-1]["version"] > self.current.version
                ):
                    self.swap_to(newest[-1]["version"])
            except Exception:  # the store may be mid-write by the trainer; try again
                continue

    def start(self) -> None:
        try:
            self.swap_to(self.pinned)
        except KeyError:
            if not self.follow:
                raise
        threading.Thread(target=self._follow, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._worker.shutdown(wait=False)

    # -- batching --------------------------------------------------------------------------
    async def predict(self, inputs: np.ndarray) -> tuple[int, np.ndarray]:
        if self._queue is None:
            self._queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self._batcher())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((inputs, future))
        result: tuple[int, np.ndarray] = await future
        return result

    async def _batcher(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            rows = first[0].shape[0]
            deadline = loop.time() + self.max_wait_s
            while rows < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
                batch.append(item)
                rows += item[0].shape[0]
            model = self.current  # taken once: the whole batch is answered by one version
            try:
                if model is None:
                    raise RuntimeError("no model is loaded yet")
                stacked = np.concatenate([x for x, _ in batch])
                outputs = await loop.run_in_executor(self._worker, _forward, model, stacked)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.batched_rows += stacked.shape[0]
            start = 0
            for x, future in batch:
                if not future.done():
                    future.set_result((model.version, outputs[start : start + x.shape[0]]))
                start += x.shape[0]


def _forward(model: LoadedModel, inputs: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = model.module(torch.from_numpy(inputs)).numpy()
    return out


def _loads(body: bytes) -> Any:
    """JSON through orjson (ten times faster than the standard library on a row of
    floats); what orjson refuses goes to ``json.loads``, which also reads the NaN and
    Infinity literals, so those get their own 422 rather than a syntax error."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _parse_inputs(server: Server, body: bytes, content_type: str) -> np.ndarray:
    model = server.current
    if model is None:
        raise HTTPException(503, "no model is loaded yet")
    shape, dtype = model.input_shape, model.dtype
    row = "[...]" if shape is None else f"[{shape[0]} numbers]" if len(shape) == 1 else str(shape)
    if content_type.startswith("application/octet-stream"):
        try:
            params = Params.from_bytes(body)
        except WireFormatError as exc:
            raise HTTPException(422, f"binary body is not a Params payload: {exc}") from None
        if list(params) != ["inputs"]:
            raise HTTPException(
                422, f"binary body must hold one entry 'inputs', got {list(params)}"
            )
        array = np.asarray(params["inputs"])
        if array.dtype != dtype:
            raise HTTPException(422, f"inputs has dtype {array.dtype}, expected {dtype}")
    else:
        try:
            document = _loads(body)
            array = np.asarray(document["inputs"], dtype=dtype)
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(
                422, f'body must be JSON {{"inputs": [{row}, ...]}}: {exc}'
            ) from None
    expected = "(rows ≥ 1, …)" if shape is None else f"(rows ≥ 1, {', '.join(map(str, shape))})"
    if array.ndim < 1 or array.shape[0] == 0 or (shape is not None and array.shape[1:] != shape):
        raise HTTPException(422, f"inputs has shape {tuple(array.shape)}, expected {expected}")
    if array.shape[0] > server.max_batch:
        raise HTTPException(422, f"inputs has {array.shape[0]} rows, at most {server.max_batch}")
    if not np.all(np.isfinite(array)):
        raise HTTPException(422, "inputs contain NaN or Inf")
    return np.ascontiguousarray(array)


JSON = "application/json"
BINARY = "application/octet-stream"


class App:
    """The ASGI application: ``POST /v1/predict`` is answered right here, everything else
    by FastAPI. Predict is the hot path, and FastAPI's routing, request object and
    response classes cost more per call than the model's forward pass does."""

    def __init__(self, server: Server, api: FastAPI) -> None:
        self.server = server
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/predict":
            await self._predict(scope, receive, send)
        else:
            await self.api(scope, receive, send)

    async def _predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if scope["method"] != "POST":
                raise HTTPException(405, "use POST for /v1/predict")
            status, media_type, body, extra = await self._answer(headers, receive)
        except HTTPException as exc:
            status, media_type, extra = exc.status_code, JSON, []
            body = orjson.dumps({"detail": exc.detail})
        self.server.stats.observe(status, time.perf_counter() - started)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", media_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _answer(
        self, headers: Mapping[str, str], receive: Receive
    ) -> tuple[int, str, bytes, list[tuple[bytes, bytes]]]:
        server = self.server
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise HTTPException(400, f"content-length {declared!r} is not a byte count")
            if int(declared) > server.max_body_bytes:
                raise HTTPException(
                    413, f"body of {declared} bytes exceeds {server.max_body_bytes}"
                )
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPException(400, "the client went away before the body was read")
            body += message.get("body", b"")
            if len(body) > server.max_body_bytes:
                raise HTTPException(413, f"body exceeds {server.max_body_bytes} bytes")
            if not message.get("more_body", False):
                break
        inputs = _parse_inputs(server, bytes(body), headers.get("content-type", ""))
        version, outputs = await server.predict(inputs)
        extra = [(b"x-model-version", str(version).encode())]
        if headers.get("accept", "").startswith(BINARY):
            return 200, BINARY, Params({"outputs": outputs}).to_bytes(), extra
        answer: dict[str, Any] = {"version": version, "outputs": outputs.tolist()}
        model = server.current
        if model is not None and model.architecture.get("task") == "classification":
            answer["predictions"] = outputs.argmax(1).tolist()
        return 200, JSON, orjson.dumps(answer), extra


def create_app(server: Server) -> App:
    app = FastAPI(title="fedstream serving", on_startup=[server.start], on_shutdown=[server.stop])

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        current = server.current
        return {
            "run": server.run_id,
            "current": current.version if current is not None else None,
            "pinned": server.pinned,
            "following": server.follow,
            "versions": server.store.models(server.run_id),
        }

    @app.post("/v1/models/pin")
    async def pin(request: Request) -> dict[str, Any]:
        try:
            version = int((await request.json())["version"])
        except (ValueError, KeyError, TypeError):
            raise HTTPException(422, 'body must be {"version": <int>}') from None
        try:
            loaded = await asyncio.get_running_loop().run_in_executor(None, server.swap_to, version)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from None
        server.pinned, server.follow = version, False
        return {"current": loaded.version, "following": False}

    @app.post("/v1/models/publish", status_code=201)
    async def publish(request: Request) -> Response:
        """A training server on another machine publishes a version here: the body is the
        params (Params wire format), the headers carry the version, the architecture and
        the metrics, and a bearer token guards it."""
        expected = server.publish_token
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        if expected is None:
            raise HTTPException(403, "publishing is off: start the server with a publish token")
        if not hmac.compare_digest(given, expected):
            raise HTTPException(401, "the publish token is wrong")
        declared = int(request.headers.get("content-length", "0"))
        if declared > server.max_publish_bytes:
            raise HTTPException(
                413, f"model of {declared} bytes exceeds {server.max_publish_bytes}"
            )
        try:
            version = int(request.headers["x-model-version"])
            arch = json.loads(request.headers["x-model-architecture"])
            metrics = json.loads(request.headers.get("x-model-metrics", "{}"))
        except (KeyError, ValueError) as exc:
            raise HTTPException(
                422, f"headers X-Model-Version and X-Model-Architecture: {exc}"
            ) from None
        body = await request.body()
        try:
            Params.from_bytes(body)
        except WireFormatError as exc:
            raise HTTPException(422, f"body is not a Params payload: {exc}") from None
        added = server.store.publish_model(server.run_id, version, arch, metrics, body)
        return JSONResponse({"version": version, "added": added}, status_code=201 if added else 200)

    @app.post("/v1/models/follow")
    async def follow() -> dict[str, Any]:
        server.pinned, server.follow = None, True
        return {"following": True}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        current = server.current
        if current is None:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True, "version": current.version})

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(prometheus_text(server))

    return App(server, app)


def prometheus_text(server: Server) -> str:
    stats = server.stats
    lines = [
        "# HELP fedstream_requests_total Prediction requests by HTTP status.",
        "# TYPE fedstream_requests_total counter",
    ]
    lines += [
        f'fedstream_requests_total{{status="{s}"}} {n}' for s, n in sorted(stats.requests.items())
    ]
    lines += [
        "# HELP fedstream_request_seconds Latency of successful predictions.",
        "# TYPE fedstream_request_seconds histogram",
    ]
    lines += [
        f'fedstream_request_seconds_bucket{{le="{bound}"}} {count}'
        for bound, count in zip(LATENCY_BUCKETS_S, stats.latency_buckets, strict=True)
    ]
    lines += [
        f'fedstream_request_seconds_bucket{{le="+Inf"}} {stats.latency_count}',
        f"fedstream_request_seconds_sum {stats.latency_sum}",
        f"fedstream_request_seconds_count {stats.latency_count}",
        "# HELP fedstream_model_version The model version being served.",
        "# TYPE fedstream_model_version gauge",
        f"fedstream_model_version {server.current.version if server.current else -1}",
        "# HELP fedstream_model_swaps_total Model swaps since start.",
        "# TYPE fedstream_model_swaps_total counter",
        f"fedstream_model_swaps_total {stats.swaps}",
        "# HELP fedstream_batches_total Forward passes (micro-batches).",
        "# TYPE fedstream_batches_total counter",
        f"fedstream_batches_total {stats.batches}",
        f"fedstream_batched_rows_total {stats.batched_rows}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PublishTarget:
    """Where a training process pushes every round's model: a serving process's base
    ``url`` (``https://…`` for TLS), its publish ``token``, and, for a server certificate
    that the system's CAs do not vouch for, the ``ca_file`` (PEM) that signed it."""

    url: str
    token: str
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError("publish_to", self.url, "an http:// or https:// URL")
        if self.ca_file is not None and not self.url.startswith("https://"):
            raise ConfigError("publish_ca", self.ca_file, "an https:// publish URL to verify")


def publish(
    target: PublishTarget,
    version: int,
    architecture: Mapping[str, Any],
    metrics: Mapping[str, float],
    params: bytes,
    timeout_s: float = 30.0,
) -> bool:
    """Push one model version to the serving process at ``target``
    (``POST /v1/models/publish``); ``True`` if it was new there. Over https the server's
    certificate is verified (against ``target.ca_file`` if given). Uses only the standard
    library, so a training server needs no HTTP client package."""
    import ssl
    import urllib.request

    request = urllib.request.Request(
        f"{target.url.rstrip('/')}/v1/models/publish",
        data=params,
        method="POST",
        headers={
            "Authorization": f"Bearer {target.token}",
            "Content-Type": "application/octet-stream",
            "X-Model-Version": str(version),
            "X-Model-Architecture": json.dumps(dict(architecture)),
            "X-Model-Metrics": json.dumps(dict(metrics)),
        },
    )
    context = (
        ssl.create_default_context(cafile=target.ca_file)
        if target.url.startswith("https://")
        else None
    )
    with urllib.request.urlopen(request, timeout=timeout_s, context=context) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return bool(answer["added"])
