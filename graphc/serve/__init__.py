"""Serving a ``graphc compile`` folder over HTTP: Starlette on uvicorn over onnxruntime.

Never imports torch (enforced by tests/test_architecture.py): a server needs only the
compile folder's ``model.onnx`` and ``manifest.json``.  See docs/serve.md.

    >>> from graphc.serve import create_app, run
    >>> run("out/digits", port=8000, max_batch=32)          # blocks; Ctrl-C ends it gracefully
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

    from starlette.types import ASGIApp

    from graphc.serve.app import ServeConfig


def create_app(out_dir: str | Path, config: ServeConfig | None = None, **limits: Any) -> ASGIApp:
    """The ASGI app for ``out_dir`` (see :func:`graphc.serve.app.create_app`)."""
    from graphc.serve.app import create_app as _create

    return _create(out_dir, config, **limits)


def run(out_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, sockets: list[socket.socket] | None = None,
        log_level: str = "info", **limits: Any) -> None:
    """Serve ``out_dir`` until SIGINT/SIGTERM; in-flight requests finish first."""
    server = make_server(out_dir, host, port, log_level, **limits)
    server.run(sockets=sockets)


def make_server(out_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **limits: Any) -> Any:
    """A ``uvicorn.Server`` (not yet started) with graphc's settings: no uvicorn access log
    (graphc writes its own JSON lines), a short keep-alive and a bound on graceful shutdown."""
    import uvicorn

    _json_log_handler(log_level)
    app = create_app(out_dir, **limits)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            access_log=False, timeout_keep_alive=5, timeout_graceful_shutdown=30, lifespan="on",
                            h11_max_incomplete_event_size=64 * 1024)
    return uvicorn.Server(config)


def _json_log_handler(level: str) -> None:
    """Access lines go to stderr as they are (each is one JSON object)."""
    import logging
    import sys

    log = logging.getLogger("graphc.serve.access")
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(h)
        log.propagate = False
    log.setLevel(logging.INFO if level in ("info", "debug", "trace") else logging.WARNING)


__all__ = ["create_app", "make_server", "run"]
