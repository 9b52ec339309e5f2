"""Prometheus metrics of the operator (served on settings.metrics_port)."""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
JOBS_BY_PHASE = Gauge(
    "loraplane_finetunejobs", "FineTuneJobs by phase (as last observed by this replica)", ["phase"], registry=REGISTRY
)
RECONCILE_SECONDS = Histogram(
    "loraplane_reconcile_duration_seconds",
    "Duration of one FineTuneJob reconcile",
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = Counter(
    "loraplane_reconcile_errors_total", "Reconciles that raised an unexpected error", ["kind"], registry=REGISTRY
)
PHASES = ("Pending", "Downloading", "Training", "Evaluating", "Succeeded", "Failed")

_phases: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def record_phase(namespace: str, name: str, phase: str | None) -> None:
    """Remember the phase of one object (None: it is gone) and refresh the per-phase gauge."""
    with _lock:
        if phase is None:
            _phases.pop((namespace, name), None)
        else:
            _phases[(namespace, name)] = phase
        counts = dict.fromkeys(PHASES, 0)
        for value in _phases.values():
            counts[value] = counts.get(value, 0) + 1
    for phase_name, count in counts.items():
        JOBS_BY_PHASE.labels(phase=phase_name).set(count)


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Start the metrics endpoint; a port that is taken is logged, not fatal."""
    if port <= 0:
        return
    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        logger.warning("metrics endpoint on port %s not started: %s", port, exc)
    else:
        logger.info("metrics on :%s/metrics", port)
