"""Prometheus metrics per public model, in a registry of the app's own (several apps can share a process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


@dataclass
class RouterMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "loraplane_router_requests", "Requests by public model and HTTP status.", ["model", "status"], registry=r
        )
        self.errors = Counter(
            "loraplane_router_upstream_errors",
            "Upstream failures (connection, 5xx, timeout) by public model and kind.",
            ["model", "kind"],
            registry=r,
        )
        self.retries = Counter(
            "loraplane_router_retries",
            "Requests retried on another replica before the first byte.",
            ["model"],
            registry=r,
        )
        self.latency = Histogram(
            "loraplane_router_request_seconds",
            "Request latency through the router.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "loraplane_router_time_to_first_token_seconds",
            "Time to the first response byte from the model server (streaming: first chunk).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "loraplane_router_tokens", "Tokens reported by vLLM's usage, by kind.", ["model", "kind"], registry=r
        )
