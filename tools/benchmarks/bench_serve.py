"""Serve section: a bounded load test of ``graphc serve`` on 127.0.0.1.

The digits CNN and GPT-mini (d=128, 4 layers, T=64) are compiled once; each is served by
``graphc serve`` in its own process (onnxruntime, default limits: max batch 32, max wait
2 ms), and 1, 8 and 64 concurrent clients (asyncio + httpx, one process) each send a fixed
number of single-example JSON requests.  A level stops by itself after its requests or
``LEVEL_SECONDS``, whichever comes first.  Rows: throughput, p50/p99 latency, mean batch size
(from /metrics) and errors.  Goals (issue #14): 0 errors; 64 clients >= 4x one client's
throughput; p99 < 10x p50.  The load generator shares the machine's cores with the server, so
the figures are a floor.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent
MODELS = [("digits_cnn", []), ("gpt_mini", [])]
LEVELS = (1, 8, 64)
REQUESTS = {1: 300, 8: 1200, 64: 2400}  # per level, over all clients
LEVEL_SECONDS = 60.0


def _payload(name: str) -> dict[str, object]:
    rng = np.random.default_rng(0)
    if name == "gpt_mini":
        return {"inputs": {"tokens": rng.integers(0, 256, (1, 64)).tolist()}}
    return {"inputs": {"image": rng.random((1, 1, 8, 8)).round(4).tolist()}}


def _batch_stats(text: str) -> tuple[float, float]:
    def get(name: str) -> float:
        m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        return float(m.group(1)) if m else 0.0
    return get("graphc_batch_size_sum"), get("graphc_batch_size_count")


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One keep-alive HTTP/1.1 round trip; the status code.  (A hand-written client: httpx
    costs ~1 ms of CPU a request, which on a small machine would be taken from the server.)"""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    m = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    await reader.readexactly(int(m.group(1)) if m else 0)
    return int(head.split(b" ", 2)[1])


async def _level(url: str, payload: dict[str, object], clients: int) -> dict[str, float]:
    import httpx

    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(payload).encode()
    request = (b"POST /v1/predict HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
               % (host.encode(), len(body))) + body
    total = REQUESTS[clients]
    latencies: list[float] = []
    errors = 0
    sent = 0
    deadline = time.perf_counter() + LEVEL_SECONDS
    s0, n0 = _batch_stats(httpx.get(f"{url}/metrics").text)

    async def client() -> None:
        nonlocal sent, errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while sent < total and time.perf_counter() < deadline:
                sent += 1
                t0 = time.perf_counter()
                try:
                    ok = await _post(reader, writer, request) == 200
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                latencies.append(time.perf_counter() - t0)
                errors += not ok
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    s1, n1 = _batch_stats(httpx.get(f"{url}/metrics").text)
    lat = np.asarray(latencies) * 1000
    return {"rps": len(lat) / elapsed, "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
            "batch": (s1 - s0) / max(n1 - n0, 1), "errors": errors, "n": len(lat)}


def _serve(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "graphc", "serve", str(folder), "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(300):
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("graphc serve did not start")


def run() -> list[tuple[str, str, str]]:
    try:
        import httpx  # noqa: F401  (the load generator: a test extra)
    except ImportError:
        return [("serve", "skipped", "needs httpx: pip install -e '.[test]'")]
    import graphc

    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as d:
        for name, overrides in MODELS:
            folder = graphc.compile(ROOT / "specs" / f"{name}.yaml", Path(d) / name, overrides).out_dir
            proc, url = _serve(folder)
            try:
                results = {n: asyncio.run(_level(url, _payload(name), n)) for n in LEVELS}
            finally:
                proc.terminate()
                proc.wait(30)
            for n, r in results.items():
                rows.append((f"{name}: {n} clients, throughput", f"{r['rps']:.0f} req/s",
                             f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, mean batch {r['batch']:.1f}, {r['n']} requests"))
                rows.append((f"{name}: {n} clients, p99 / p50", f"{r['p99'] / r['p50']:.1f}x", "goal < 10x"))
                rows.append((f"{name}: {n} clients, errors", f"{r['errors']}", "goal 0"))
            ratio = results[64]["rps"] / results[1]["rps"]
            rows.append((f"{name}: throughput 64 clients / 1 client", f"{ratio:.1f}x", "goal >= 4x"))
    return rows
