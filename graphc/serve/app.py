"""The ASGI app: Starlette routes over the manifest, the checker and the batcher.

    GET  /v1/health     {"status": "ok", ...}
    GET  /v1/model      name, inputs/outputs (symbolic dims, dtypes, proven ranges)
    GET  /openapi.json  an OpenAPI 3 description written from the manifest
    POST /v1/predict    {"inputs": {NAME: nested lists}}  or an application/x-npz body
    GET  /metrics       Prometheus text: requests by status, latency, batch sizes, queue depth

Every refusal is a JSON body ``{"error": {"status", "input", "problem", "message"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from graphc.serve.batcher import Batcher, QueueFull, RunFailed
from graphc.serve.metrics import Metrics
from graphc.serve.openapi import openapi
from graphc.serve.runtime import OnnxModel
from graphc.serve.validate import RequestError, parse_json, parse_npz, to_npz

NPZ = "application/x-npz"
INLINE_PARSE = 64 << 10  # bodies below this many bytes are parsed on the event loop (a thread hop costs more)
access_log = logging.getLogger("graphc.serve.access")


@dataclass(frozen=True)
class ServeConfig:
    """Limits of one server; each has a ``graphc serve`` flag."""

    max_batch: int = 32  # examples per onnxruntime run
    max_wait_ms: float = 2.0  # how long the first request of a batch waits for company
    queue: int = 256  # queued requests before 503
    max_body: int = 8 << 20  # bytes of a request body (and of one decoded input array)
    body_timeout: float = 10.0  # seconds to receive a whole body (slow clients get 408)
    threads: int = 0  # onnxruntime intra-op threads (0: all cores; batched runs use them)
    retry_after: int = 1  # seconds, in the 503's Retry-After


def _error(e: RequestError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(e.to_json(), status_code=e.status, headers=headers)


async def read_body(request: Request, cfg: ServeConfig) -> bytes:
    """The body, refused early from Content-Length and again while streaming past
    ``max_body``; a client that has not sent it all within ``body_timeout`` gets 408."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "bad Content-Length header")
        if int(declared) > cfg.max_body:
            raise RequestError(413, f"body of {declared} bytes is over the limit of {cfg.max_body}")

    async def chunks() -> bytes:
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > cfg.max_body:
                raise RequestError(413, f"body is over the limit of {cfg.max_body} bytes")
        return bytes(buf)

    try:
        return await asyncio.wait_for(chunks(), cfg.body_timeout)
    except TimeoutError:
        raise RequestError(408, f"the body was not received within {cfg.body_timeout:g} s") from None
    except ClientDisconnect:
        raise RequestError(400, "the client closed the connection before the body ended") from None


def _outputs_json(name: str, n: int, outs: dict[str, np.ndarray]) -> Response:
    """The JSON answer, encoded by orjson straight from the arrays (20x faster than
    ``json.dumps(a.tolist())`` on GPT-mini's [1, 64, 256] logits); JSON has no NaN, so a
    non-finite output value becomes null."""
    import orjson

    doc = {"model": name, "batch": n, "outputs": {k: np.ascontiguousarray(v) for k, v in outs.items()}}
    return Response(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


class Server:
    """State of one app: the model, its batcher and metrics."""

    def __init__(self, folder: str | Path, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.model = OnnxModel(folder, threads=cfg.threads)
        self.manifest = self.model.manifest
        self.metrics = Metrics()
        self.batcher = Batcher(self.model, cfg.max_batch, cfg.max_wait_ms, cfg.queue, on_batch=self.metrics.batch_size.observe)
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.manifest.name, "queue": self.batcher.depth})

    async def model_info(self, request: Request) -> Response:
        return JSONResponse(self.manifest.to_json())

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi(self.manifest))

    async def prometheus(self, request: Request) -> Response:
        body, ctype = self.metrics.render()
        return Response(body, media_type=ctype)

    async def predict(self, request: Request) -> Response:
        try:
            self.batcher.arriving += 1  # tells the batcher that company is on its way
            try:
                body = await read_body(request, self.cfg)
                binary = request.headers.get("content-type", "").split(";")[0].strip() == NPZ
                parse = parse_npz if binary else parse_json
                if len(body) < INLINE_PARSE:
                    arrays = parse(self.manifest, body, self.cfg.max_body)
                else:  # a big body is parsed off the event loop, so other requests keep flowing
                    arrays = await asyncio.to_thread(parse, self.manifest, body, self.cfg.max_body)
            finally:
                self.batcher.arriving -= 1
            outs = await self.batcher.submit(arrays)
        except RequestError as e:
            return _error(e)
        except QueueFull:
            full = RequestError(503, f"the queue is full ({self.cfg.queue} requests); retry later")
            return _error(full, {"Retry-After": str(self.cfg.retry_after)})
        except RunFailed as e:
            return _error(RequestError(422, f"the model refused the inputs: {e}"))
        n = int(next(iter(arrays.values())).shape[0]) if arrays else 0
        if NPZ in request.headers.get("accept", ""):
            return Response(to_npz(outs), media_type=NPZ)
        return _outputs_json(self.manifest.name, n, outs)


class AccessLog:
    """Pure ASGI middleware: one JSON line per request on the ``graphc.serve.access`` logger,
    and the request counter / latency histogram.  (Pure ASGI rather than Starlette's
    BaseHTTPMiddleware, which would buffer streaming bodies.)"""

    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app = app
        self.server = server  # the model, batcher and metrics behind the app
        self.metrics = server.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - t0
            path = scope.get("path", "")
            self.metrics.observe(path, status, seconds)
            client = scope.get("client") or ("", 0)
            access_log.info(json.dumps({"ts": round(time.time(), 3), "method": scope.get("method"), "path": path,
                                        "status": status, "ms": round(seconds * 1000, 3), "client": f"{client[0]}:{client[1]}"}))


def create_app(out_dir: str | Path, config: ServeConfig | None = None, **limits: Any) -> ASGIApp:
    """The ASGI app serving the ``graphc compile`` folder ``out_dir``.

    Limits come from ``config`` or keyword arguments named like :class:`ServeConfig`'s fields
    (``max_batch=64, max_wait_ms=5``).  Run it with any ASGI server, e.g.
    ``uvicorn.run(create_app("out/digits"), host="127.0.0.1")``.
    """
    cfg = config or ServeConfig(**limits)
    srv = Server(out_dir, cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        srv.batcher.start()
        yield
        await srv.batcher.stop()

    routes = [
        Route("/v1/health", srv.health, methods=["GET"]),
        Route("/v1/model", srv.model_info, methods=["GET"]),
        Route("/openapi.json", srv.openapi, methods=["GET"]),
        Route("/metrics", srv.prometheus, methods=["GET"]),
        Route("/v1/predict", srv.predict, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: _not_found, 405: _not_allowed, 500: _internal})
    app.state.server = srv
    return AccessLog(app, srv)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error(RequestError(404, f"no route {request.url.path} (see /openapi.json)"))


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return _error(RequestError(405, f"method {request.method} not allowed on {request.url.path}"))


async def _internal(request: Request, exc: Exception) -> Response:
    logging.getLogger("graphc.serve").exception("internal error on %s", request.url.path)
    return _error(RequestError(500, f"internal error: {type(exc).__name__}"))
