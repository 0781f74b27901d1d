"""The HTTP face of serving: ``POST /v1/predict`` on a small ASGI handler, the rest on
FastAPI.

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
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from fedstream.dashboard.routes import mount_dashboard
from fedstream.errors import WireFormatError
from fedstream.params import Params
from fedstream.serving.registry import ModelLoadError, build_version
from fedstream.serving.server import Server
from fedstream.serving.stats import prometheus_text


def _loads(body: bytes) -> Any:
    """JSON through orjson (ten times faster than the standard library on a row of
    floats); what orjson refuses goes to ``json.loads``, which also reads the NaN and
    Infinity literals, so those get their own 422 rather than a syntax error. Nesting too
    deep for either, and numbers too large for them, are a ``ValueError`` too."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return json.loads(body)
        except RecursionError:
            raise ValueError("the JSON is nested too deeply") from None


MAX_VERSION = 2**63 - 1


def _version(value: Any, where: str) -> int:
    """A model version from a request: an integer in 0 … 2⁶³ − 1 (what the store holds),
    never a boolean, a float such as 1e400, or a number too large."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise HTTPException(422, f"{where} must be an integer version, got {str(value)[:30]}")
    try:
        version = int(value)
    except ValueError:
        raise HTTPException(422, f"{where} must be an integer version") from None
    if not 0 <= version <= MAX_VERSION:
        raise HTTPException(422, f"{where}={str(version)[:30]} is invalid: expected 0 … 2^63 − 1")
    return version


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return isinstance(value, list) and any(_has_bool(v) for v in value)


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
            inputs = document["inputs"]
            # true/false would become 1.0/0.0; the byte test keeps the walk off the hot path
            if (b"true" in body or b"false" in body) and _has_bool(inputs):
                raise ValueError("inputs must be numbers, not booleans")
            array = np.asarray(inputs, dtype=np.float64 if dtype.kind in "iu" else dtype)
            if dtype.kind in "iu":  # whole numbers, said so, not silently truncated
                if not np.all(np.isfinite(array)) or not np.array_equal(array, np.trunc(array)):
                    raise ValueError(f"inputs must be whole numbers ({dtype})")
                array = array.astype(dtype)
        except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
            raise HTTPException(
                422, f'body must be JSON {{"inputs": [{row}, ...]}}: {str(exc)[:200]}'
            ) from None
    expected = "(rows ≥ 1, …)" if shape is None else f"(rows ≥ 1, {', '.join(map(str, shape))})"
    if array.ndim < 1 or array.shape[0] == 0 or (shape is not None and array.shape[1:] != shape):
        raise HTTPException(422, f"inputs has shape {tuple(array.shape)}, expected {expected}")
    if array.shape[0] > server.max_batch:
        raise HTTPException(422, f"inputs has {array.shape[0]} rows, at most {server.max_batch}")
    if not np.all(np.isfinite(array)):
        raise HTTPException(422, "inputs contain NaN or Inf")
    if model.vocab_size is not None:
        _check_token_ids(array, model.vocab_size)
    return np.ascontiguousarray(array)


def _check_token_ids(array: np.ndarray, vocab_size: int) -> None:
    """Token ids must lie in ``[0, vocab_size)``: checked here, per request, since one bad
    row in a micro-batch would fail every request batched with it."""
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= vocab_size:
        raise HTTPException(
            422, f"inputs are token ids in [{low}, {high}], expected [0, {vocab_size})"
        )


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
            "client": None
            if server.registry.personal is None
            else server.registry.personal.client_id,
            "current": current.version if current is not None else None,
            "pinned": server.registry.pinned,
            "following": server.registry.follow,
            "versions": server.store.models(server.run_id),
        }

    def authorise(request: Request) -> None:
        """Routes that change what is served need the publish token when there is one
        (without one the server listens on loopback only: ``fedstream serve`` refuses
        another address)."""
        expected = server.publish_token
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        if expected is not None and not hmac.compare_digest(given, expected):
            raise HTTPException(401, "this route changes the served model: the token is wrong")

    @app.post("/v1/models/pin")
    async def pin(request: Request) -> dict[str, Any]:
        authorise(request)
        try:
            version = _version(_loads(await request.body())["version"], "version")
        except (ValueError, KeyError, TypeError):
            raise HTTPException(422, 'body must be {"version": <int>}') from None
        try:
            loaded = await asyncio.get_running_loop().run_in_executor(None, server.swap_to, version)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from None
        except ModelLoadError as exc:
            raise HTTPException(422, str(exc)) from None
        server.pin(version)
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
            version = _version(request.headers["x-model-version"], "X-Model-Version")
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
        if any(m["version"] == version for m in server.store.models(server.run_id)):
            return JSONResponse({"version": version, "added": False})  # versions are immutable
        try:  # built and run once, off the event loop, before it can be listed
            await asyncio.get_running_loop().run_in_executor(
                None, build_version, version, arch, metrics, body, server.registry.app
            )
        except ModelLoadError as exc:
            raise HTTPException(422, f"{exc}: not published") from None
        added = server.store.publish_model(server.run_id, version, arch, metrics, body)
        return JSONResponse({"version": version, "added": added}, status_code=201 if added else 200)

    @app.post("/v1/models/follow")
    async def follow(request: Request) -> dict[str, Any]:
        authorise(request)
        server.pin(None)
        return {"following": True}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        current = server.current
        broken = {str(v): why for v, why in sorted(server.registry.broken.items())}
        if current is None:
            return JSONResponse({"ready": False, "broken_versions": broken}, status_code=503)
        return JSONResponse({"ready": True, "version": current.version, "broken_versions": broken})

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        current = server.current
        return PlainTextResponse(
            prometheus_text(
                server.stats,
                current.version if current is not None else None,
                len(server.registry.broken),
            )
        )

    mount_dashboard(app, server.store.path, serving=lambda: serving_summary(server))
    return App(server, app)


def serving_summary(server: Server) -> dict[str, Any]:
    """The serving side for the dashboard: the run and version served, requests by status,
    their mean latency, and the model swaps so far."""
    stats, current = server.stats, server.current
    summary: dict[str, Any] = {
        "run": server.run_id,
        "version served": current.version if current is not None else None,
        "model swaps": stats.swaps,
    }
    summary |= {f"requests {status}": count for status, count in sorted(stats.requests.items())}
    if stats.latency_count:
        summary["mean latency (ms)"] = 1000 * stats.latency_sum / stats.latency_count
    return summary
