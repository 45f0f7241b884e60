"""graphc serve: a real uvicorn server on a free loopback port, exercised with httpx.

Covers the API (health, model, OpenAPI, predict as JSON and npz), micro-batching (results
split back exactly, mean batch size > 1), back-pressure (503 + Retry-After), and the hostile
requests of issue #14, each answered 4xx with a JSON error while the server keeps serving.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from compiled import compiled

MAX_BODY = 1 << 20
BODY_TIMEOUT = 1.0


class Running:
    """A uvicorn server in a background thread, bound to 127.0.0.1 on a free port."""

    def __init__(self, folder: Path, **limits: Any) -> None:
        from graphc.serve import make_server

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = make_server(folder, port=self.port, log_level="warning", **limits)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def digits() -> Iterator[Running]:
    srv = Running(compiled("digits_cnn"), max_body=MAX_BODY, body_timeout=BODY_TIMEOUT, max_wait_ms=50, max_batch=64)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def ort_digits() -> Any:
    from graphc.serve.runtime import OnnxModel

    return OnnxModel(compiled("digits_cnn"))


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def assert_error(r: httpx.Response, status: int, input: str | None, words: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["status"] == status and err["input"] == input, err
    assert words in err["problem"], err


def assert_serving(srv: Running) -> None:
    r = srv.client.post("/v1/predict", json={"inputs": {"image": images(1).tolist()}})
    assert r.status_code == 200 and len(r.json()["outputs"]["logits"][0]) == 10


# --- the API -----------------------------------------------------------------------------


def test_health_model_and_openapi(digits: Running) -> None:
    h = digits.client.get("/v1/health").json()
    assert h["status"] == "ok" and h["model"] == "digits_cnn"
    m = digits.client.get("/v1/model").json()
    assert m["inputs"] == {"image": {"shape": ["B", 1, 8, 8], "dtype": "float32", "range": [0.0, 1.0]}}
    assert m["outputs"]["logits"]["shape"] == ["B", 10] and m["batch_dim"] == "B"
    assert m["dims"]["B"]["range"][0] == 1
    doc = digits.client.get("/openapi.json").json()
    body = doc["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    image = body["application/json"]["schema"]["properties"]["inputs"]["properties"]["image"]
    assert image["type"] == "array" and image["items"]["items"]["items"]["items"]["type"] == "number"
    assert image["items"]["minItems"] == 1 and "application/x-npz" in body


def test_predict_json_matches_onnxruntime(digits: Running, ort_digits: Any) -> None:
    x = images(3)
    r = digits.client.post("/v1/predict", json={"inputs": {"image": x.tolist()}})
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["outputs"]["logits"], dtype=np.float32)
    np.testing.assert_allclose(got, ort_digits.run({"image": x})["logits"], rtol=1e-5, atol=1e-6)
    assert r.json()["batch"] == 3


def test_predict_binary_npz_both_ways(digits: Running, ort_digits: Any) -> None:
    x = images(5, seed=1)
    r = digits.client.post("/v1/predict", content=npz(image=x),
                           headers={"content-type": "application/x-npz", "accept": "application/x-npz"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npz"
    got = np.load(io.BytesIO(r.content))["logits"]
    np.testing.assert_array_equal(got, ort_digits.run({"image": x})["logits"])


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_concurrent_requests_are_batched_and_split_back(digits: Running, ort_digits: Any) -> None:
    before = digits.client.get("/metrics").text
    n0, s0 = _metric(before, "graphc_batch_size_count"), _metric(before, "graphc_batch_size_sum")
    xs = [images(1 + i % 3, seed=100 + i) for i in range(24)]

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=digits.url, timeout=20) as c:
            return await asyncio.gather(*(c.post("/v1/predict", json={"inputs": {"image": x.tolist()}}) for x in xs))

    responses = asyncio.run(fire())
    for x, r in zip(xs, responses):
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.asarray(r.json()["outputs"]["logits"], np.float32), ort_digits.run({"image": x})["logits"],
                                   rtol=1e-4, atol=1e-5)
    after = digits.client.get("/metrics").text
    runs = _metric(after, "graphc_batch_size_count") - n0
    examples = _metric(after, "graphc_batch_size_sum") - s0
    assert examples == sum(len(x) for x in xs)
    assert examples / runs > 1.0, f"mean batch {examples / runs}"
    assert 'graphc_requests_total{path="/v1/predict",status="200"}' in after
    assert "graphc_request_seconds_bucket" in after and "graphc_queue_depth" in after


def _slow_model(srv: Running, seconds: float) -> None:
    """Make the server's model take ``seconds`` per run (a stand-in for a big model), so
    requests pile up in its queue."""
    model = srv.server.config.app.server.model
    run = model.run
    model.run = lambda feeds: (time.sleep(seconds), run(feeds))[1]


def test_full_queue_answers_503_with_retry_after() -> None:
    srv = Running(compiled("digits_cnn"), queue=1, max_batch=1, max_wait_ms=0)
    try:
        _slow_model(srv, 0.3)

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=20) as c:
                return await asyncio.gather(*(c.post("/v1/predict", json={"inputs": {"image": images(1).tolist()}}) for _ in range(6)))

        responses = asyncio.run(fire())
        codes = [r.status_code for r in responses]
        assert 200 in codes and 503 in codes, codes
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["retry-after"] == "1"
        assert_error(busy, 503, None, "queue is full")
    finally:
        srv.stop()


# --- hostile requests --------------------------------------------------------------------


def _json_post(srv: Running, body: bytes | str) -> httpx.Response:
    return srv.client.post("/v1/predict", content=body, headers={"content-type": "application/json"})


HOSTILE_JSON = [
    ("malformed_json", b'{"inputs": {"image": [[[[0.1, ', 400, None, "malformed JSON"),
    ("not_an_object", b"[1, 2]", 400, None, '{"inputs"'),
    ("missing_input", json.dumps({"inputs": {}}), 422, "image", "missing input"),
    ("extra_input", json.dumps({"inputs": {"image": images(1).tolist(), "mask": [1]}}), 422, "mask", "unknown input"),
    ("wrong_rank", json.dumps({"inputs": {"image": images(1)[0].tolist()}}), 422, "image", "wrong rank"),
    ("wrong_fixed_dim", json.dumps({"inputs": {"image": np.zeros((1, 1, 8, 7)).tolist()}}), 422, "image", "dim 3 is 7"),
    ("wrong_dtype_strings", json.dumps({"inputs": {"image": [[[["a"] * 8] * 8]]}}), 422, "image", "wrong dtype"),
    ("ragged", json.dumps({"inputs": {"image": [[[[0.0] * 8] * 8], [[[0.0] * 7] * 8]]}}), 422, "image", "ragged"),
    ("nan", '{"inputs": {"image": [[[' + ",".join(["[" + ",".join(["NaN"] + ["0.5"] * 7) + "]"] + ["[" + ",".join(["0.5"] * 8) + "]"] * 7) + "]]]}}",
     422, "image", "non-finite"),
    ("empty_batch", json.dumps({"inputs": {"image": []}}), 422, "image", "wrong rank"),
]


@pytest.mark.parametrize(("body", "status", "input", "words"), [c[1:] for c in HOSTILE_JSON], ids=[c[0] for c in HOSTILE_JSON])
def test_hostile_json_is_refused_and_server_keeps_serving(digits: Running, body: bytes | str, status: int, input: str | None,
                                                          words: str) -> None:
    assert_error(_json_post(digits, body), status, input, words)
    assert_serving(digits)


def _npy_header_only(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """An .npz whose one member declares ``shape`` but holds no data."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": descr, "fortran_order": False, "shape": shape})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("image.npy", head.getvalue())
    return buf.getvalue()


HOSTILE_NPZ = [
    ("billion_dim_header", _npy_header_only((10**9, 1, 8, 8)), 413, "image", "over the limit"),
    ("truncated_member", _npy_header_only((2, 1, 8, 8)), 400, "image", "truncated"),
    ("complex_dtype", npz(image=np.zeros((1, 1, 8, 8), np.complex64)), 422, "image", "wrong dtype"),
    ("nan_binary", npz(image=np.full((1, 1, 8, 8), np.nan, np.float32)), 422, "image", "non-finite"),
    ("wrong_rank_binary", npz(image=np.zeros((1, 8, 8), np.float32)), 422, "image", "wrong rank"),
    ("extra_binary", npz(image=images(1), other=images(1)), 422, "other", "unknown input"),
    ("not_a_zip", b"PK\x03\x04 not really", 400, None, "malformed npz"),
]


@pytest.mark.parametrize(("body", "status", "input", "words"), [c[1:] for c in HOSTILE_NPZ], ids=[c[0] for c in HOSTILE_NPZ])
def test_hostile_binary_is_refused_before_allocation(digits: Running, body: bytes, status: int, input: str | None, words: str) -> None:
    r = digits.client.post("/v1/predict", content=body, headers={"content-type": "application/x-npz"})
    assert_error(r, status, input, words)
    assert_serving(digits)


def _raw(srv: Running, head: bytes, body: bytes, wait: float = 10.0) -> tuple[int, dict[str, Any]]:
    """Send ``head`` + ``body`` on a raw socket (and no more), then read the response."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=wait) as s:
        s.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


def _length(data: bytes) -> int:
    m = re.search(rb"content-length: (\d+)", data.split(b"\r\n\r\n", 1)[0], re.IGNORECASE)
    return int(m.group(1)) if m else 0


def test_50mb_body_is_refused_from_content_length(digits: Running) -> None:
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 52428800\r\n\r\n"
    status, doc = _raw(digits, head, b"[" * 65536)
    assert status == 413 and "over the limit" in doc["error"]["problem"]
    assert_serving(digits)


def test_chunked_body_is_cut_while_streaming(digits: Running) -> None:
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    piece = b"1" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for _ in range(MAX_BODY // len(piece) + 1))
    status, doc = _raw(digits, head, chunks)
    assert status == 413 and "over the limit" in doc["error"]["problem"]
    assert_serving(digits)


def test_slowloris_partial_body_times_out(digits: Running) -> None:
    head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    t0 = time.monotonic()
    status, doc = _raw(digits, head, b'{"inputs": ')
    assert status == 408 and "not received within" in doc["error"]["problem"]
    assert time.monotonic() - t0 < BODY_TIMEOUT + 5
    assert_serving(digits)


def test_unknown_route_and_method_are_json(digits: Running) -> None:
    assert_error(digits.client.get("/v2/nothing"), 404, None, "no route")
    assert_error(digits.client.get("/v1/predict"), 405, None, "not allowed")


def test_out_of_vocab_id_is_refused_by_name_from_the_manifest_range() -> None:
    """compile records the spec's declared input range: the id is refused before onnxruntime."""
    srv = Running(compiled("gpt_mini"))
    try:
        assert_error(srv.client.post("/v1/predict", json={"inputs": {"tokens": [[1, 2, 9999]]}}), 422, "tokens",
                     "outside the declared range [0, 256)")
    finally:
        srv.stop()


def test_out_of_vocab_id_fails_alone_not_its_batch(tmp_path: Path) -> None:
    """With no id range in the manifest (dropped here), onnxruntime refuses the bad request,
    which is re-run alone, so the good requests batched with it still get answers."""
    folder = tmp_path / "gpt_mini"
    shutil.copytree(compiled("gpt_mini"), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["inputs"]["tokens"].pop("range")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    srv = Running(folder, max_wait_ms=100, max_batch=16)
    try:
        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=srv.url, timeout=20) as c:
                good = [c.post("/v1/predict", json={"inputs": {"tokens": [[1, 2, 3]]}}) for _ in range(3)]
                bad = c.post("/v1/predict", json={"inputs": {"tokens": [[1, 2, 9999]]}})
                return await asyncio.gather(bad, *good)

        bad, *good = asyncio.run(fire())
        assert_error(bad, 422, None, "the model refused the inputs")
        assert all(r.status_code == 200 and np.asarray(r.json()["outputs"]["logits"]).shape == (1, 3, 256) for r in good)
        assert_error(srv.client.post("/v1/predict", json={"inputs": {"tokens": [list(range(17))]}}), 422, "tokens",
                     "outside its proven range [1, 16]")
        assert_error(srv.client.post("/v1/predict", json={"inputs": {"tokens": [[0.5, 1.5]]}}), 422, "tokens", "wrong dtype")
    finally:
        srv.stop()


def test_graceful_shutdown_finishes_in_flight_requests() -> None:
    srv = Running(compiled("digits_cnn"))
    _slow_model(srv, 0.5)
    result: list[httpx.Response] = []
    t = threading.Thread(target=lambda: result.append(httpx.post(f"{srv.url}/v1/predict", json={"inputs": {"image": images(2).tolist()}},
                                                                 timeout=20)))
    t.start()
    time.sleep(0.2)  # the request is in the model now
    srv.server.should_exit = True
    t.join(20)
    srv.thread.join(30)
    assert result and result[0].status_code == 200 and len(result[0].json()["outputs"]["logits"]) == 2


def test_access_log_is_json_lines(digits: Running, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    log = logging.getLogger("graphc.serve.access")
    level = log.level
    log.addHandler(caplog.handler)
    log.setLevel(logging.INFO)
    try:
        digits.client.get("/v1/health")
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:  # the line is written after the response
            time.sleep(0.01)
    finally:
        log.removeHandler(caplog.handler)
        log.setLevel(level)
    line = json.loads(caplog.records[-1].getMessage())
    assert line["path"] == "/v1/health" and line["status"] == 200 and line["method"] == "GET" and line["ms"] >= 0


def test_id_range_from_the_manifest_is_checked_before_onnxruntime(tmp_path: Path) -> None:
    """A manifest that declares an input's value range (``inputs.tokens.range``) makes the
    server refuse ids outside it by name, without running the model."""
    import shutil

    folder = tmp_path / "gpt"
    shutil.copytree(compiled("gpt_mini"), folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["inputs"]["tokens"]["range"] = [0, 256]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    srv = Running(folder)
    try:
        assert srv.client.get("/v1/model").json()["inputs"]["tokens"]["range"] == [0, 256]
        assert_error(srv.client.post("/v1/predict", json={"inputs": {"tokens": [[1, 256]]}}), 422, "tokens",
                     "value 256 outside the declared range [0, 256)")
        assert_error(srv.client.post("/v1/predict", json={"inputs": {"tokens": [[-1, 2]]}}), 422, "tokens", "value -1 outside")
        assert srv.client.post("/v1/predict", json={"inputs": {"tokens": [[1, 255]]}}).status_code == 200
    finally:
        srv.stop()
