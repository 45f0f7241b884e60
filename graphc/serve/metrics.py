"""Prometheus metrics of one server (a registry of its own, so two apps in one process --
tests, benchmarks -- never share counters)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """Requests by path and status, request latency, examples per onnxruntime run, queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("graphc_requests", "HTTP requests by path and status", ["path", "status"], registry=self.registry)
        self.latency = Histogram("graphc_request_seconds", "request latency (seconds)", ["path"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.batch_size = Histogram("graphc_batch_size", "examples per onnxruntime run", buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("graphc_queue_depth", "requests waiting for the model", registry=self.registry)

    def observe(self, path: str, status: int, seconds: float) -> None:
        known = path if path in ("/v1/predict", "/v1/health", "/v1/model", "/metrics", "/openapi.json") else "other"
        self.requests.labels(known, str(status)).inc()
        self.latency.labels(known).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
