"""Prometheus metrics per public model and version, in a registry of the app's own (several apps can share a process).

`model` is the public name a client asks for; `version` is what vLLM was asked for: the adapter version
(the two sides of a canary apart) or the base model, "-" before that was known (a request refused early).

The request path records through the methods below, which keep each labelled child once it exists
(`labels()` takes a lock and builds a key on every call, work the router would pay per request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

LABELS = ("model", "version")  # every metric's first labels
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class RouterMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, [*LABELS, *labels], registry=self.registry)

        def histogram(name: str, documentation: str) -> Histogram:
            return Histogram(name, documentation, LABELS, buckets=LATENCY_BUCKETS, registry=self.registry)

        self.requests = counter(
            "loraplane_router_requests", "Requests by public model, version and HTTP status.", "status"
        )
        self.errors = counter(
            "loraplane_router_upstream_errors",
            "Upstream failures (connection, 5xx, timeout) by public model, version and kind.",
            "kind",
        )
        self.retries = counter("loraplane_router_retries", "Requests retried on another replica before the first byte.")
        self.latency = histogram("loraplane_router_request_seconds", "Request latency through the router.")
        self.ttft = histogram(
            "loraplane_router_time_to_first_token_seconds",
            "Time to the first response byte from the model server (streaming: first chunk).",
        )
        self.tokens = counter("loraplane_router_tokens", "Tokens reported by vLLM's usage, by kind.", "kind")

        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def request(self, model: str, version: str, status: int | str, seconds: float | None, ttft: float | None) -> None:
        """One finished request: its status, and for a known model its latency (and time to first token)."""
        self._child(self.requests, model, version, str(status)).inc()
        if seconds is not None:
            self._child(self.latency, model, version).observe(seconds)
            if ttft is not None:
                self._child(self.ttft, model, version).observe(ttft)

    def error(self, model: str, version: str, kind: str) -> None:
        self._child(self.errors, model, version, kind).inc()

    def retry(self, model: str, version: str) -> None:
        self._child(self.retries, model, version).inc()

    def token_count(self, model: str, version: str, kind: str, count: int) -> None:
        self._child(self.tokens, model, version, kind).inc(count)
