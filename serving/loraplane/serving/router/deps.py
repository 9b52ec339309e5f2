"""What the route handlers are given: FastAPI dependencies and their `Annotated` aliases.

Each reads what `create_app` put on `app.state`. The two inference endpoints take none of them: they are the
request path and skip FastAPI (see app.RouterApp).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from loraplane.serving.router import auth
from loraplane.serving.router.metrics import RouterMetrics
from loraplane.serving.router.settings import RouterSettings
from loraplane.serving.router.state import RouterState

# Every dependency is a coroutine function: FastAPI runs a plain function in its thread pool.


async def get_settings(request: Request) -> RouterSettings:
    settings: RouterSettings = request.app.state.settings
    return settings


async def get_state(request: Request) -> RouterState:
    state: RouterState = request.app.state.router_state
    return state


async def get_metrics(request: Request) -> RouterMetrics:
    metrics: RouterMetrics = request.app.state.metrics
    return metrics


async def get_caller(request: Request) -> auth.Caller:
    """Who calls, by API key: 401 when keys are configured and the request has none or an unknown one."""
    keys: auth.Keys | None = request.app.state.keys
    return auth.caller(request.headers, keys)


SettingsDep = Annotated[RouterSettings, Depends(get_settings)]
StateDep = Annotated[RouterState, Depends(get_state)]
MetricsDep = Annotated[RouterMetrics, Depends(get_metrics)]
CallerDep = Annotated[auth.Caller, Depends(get_caller)]


async def require_admin(request: Request, settings: SettingsDep) -> None:
    """The admin key itself (404 while the admin API is disabled, 401 without a key, 403 for any other key)."""
    auth.require_admin(request.headers, settings.admin_key)
