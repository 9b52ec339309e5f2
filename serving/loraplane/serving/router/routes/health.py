"""Health and metrics: liveness, readiness (some replica is healthy), Prometheus' scrape."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from loraplane.serving.router.deps import MetricsDep, StateDep
from loraplane.serving.router.routes import READ

router = APIRouter()


@router.api_route("/healthz", methods=READ)
async def healthz() -> Response:
    return JSONResponse({"status": "ok"})


@router.api_route("/readyz", methods=READ)
async def readyz(state: StateDep) -> Response:
    ready = state.any_healthy()
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.api_route("/metrics", methods=READ)
async def metrics(registry: MetricsDep) -> Response:
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)
