"""The OpenAI API: GET /v1/models here; POST /v1/chat/completions and /v1/completions in the proxy.

The two inference endpoints are the request path, so `app.RouterApp` hands them to the proxy before FastAPI's
middleware, routing and dependencies run. They are registered here too, as plain Starlette routes, for what
does not take that path: another method (405) and a request while no proxy runs (503, outside the lifespan).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from loraplane.serving.router.auth import Caller
from loraplane.serving.router.deps import CallerDep, StateDep
from loraplane.serving.router.errors import unavailable
from loraplane.serving.router.proxy import ENDPOINTS, Proxy
from loraplane.serving.router.routes import READ
from loraplane.serving.router.settings import RouterSettings
from loraplane.serving.router.table import Target

router = APIRouter()


def model_cards(targets: Mapping[str, Target], who: Caller) -> list[dict[str, Any]]:
    """OpenAI model objects for the public names `who` may use, by name; an adapter's `parent` is its base model."""
    return [
        {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "loraplane",
            "root": target.route.base_model,
            "parent": target.route.base_model if target.model is not None else None,
        }
        for name, target in sorted(targets.items())
        if who.may_use(name)
    ]


@router.api_route("/v1/models", methods=READ)
async def list_models(state: StateDep, who: CallerDep) -> Response:
    return JSONResponse({"object": "list", "data": model_cards(state.targets, who)})


async def inference(request: Request) -> Response:
    proxy: Proxy | None = request.app.proxy
    if proxy is None:
        settings: RouterSettings = request.app.state.settings
        raise unavailable("The router is not serving yet; retry shortly.", settings.retry_after_s)
    return await proxy.handle(request, ENDPOINTS[request.url.path])


for _path in ENDPOINTS:
    router.add_route(_path, inference, methods=["POST"])
