"""Prometheus metrics of one server (own CollectorRegistry, so several apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ENDPOINTS = ("/v1/predict", "/v1/batch", "/v1/tasks", "/health", "/metrics", "/")


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ptune_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("ptune_request_latency_seconds", "Request latency by endpoint", ["endpoint"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                 registry=self.registry)
        self.batch_rows = Histogram("ptune_batch_rows", "Rows per model call (dynamic batching)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.batch_requests = Histogram("ptune_batch_requests", "Requests merged into one model call",
                                        buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.swaps = Counter("ptune_prompt_swaps", "Hot swaps of a task's prompt by outcome",
                             ["task", "outcome"], registry=self.registry)
        self.version = Gauge("ptune_prompt_version", "Registry version served per task", ["task"],
                             registry=self.registry)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"  # bounded label values whatever the URL
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, rows: int, requests: int) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)

    def render(self, versions: dict[str, str]) -> bytes:
        for task, version in versions.items():
            if version.isdigit():
                self.version.labels(task).set(int(version))
        return generate_latest(self.registry)
