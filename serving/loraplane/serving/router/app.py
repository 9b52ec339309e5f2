"""The router app: `create_app` (the factory), its lifespan, and the ASGI entry that serves the request path.

    routes/openai_api.py  GET /v1/models (POST /v1/chat/completions and /v1/completions: proxy.py)
    routes/admin.py       /admin/v1/servers[/{name}]: the routes, admin key only
    routes/health.py      /healthz, /readyz, /metrics

Handlers take what they need through `deps.py`, from `app.state`: the settings, the API keys and the metrics
(set here) and the live routing state. The lifespan owns the request path's upstream client and the proxy on
it, and the adapter manager's session and reconcile loops (reconcile.py).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from loraplane.serving.router import auth, errors
from loraplane.serving.router.metrics import RouterMetrics
from loraplane.serving.router.proxy import ENDPOINTS, Proxy
from loraplane.serving.router.reconcile import adapter_manager
from loraplane.serving.router.routes import admin, health, openai_api
from loraplane.serving.router.settings import RouterSettings
from loraplane.serving.router.state import RouterState
from loraplane.serving.router.table import ServerRoute
from loraplane.serving.router.upstream import UpstreamClient


class RouterApp(FastAPI):
    """FastAPI for everything but the two inference endpoints, which go to the proxy directly.

    They are the request path, measured with bench/router_overhead.py: served before FastAPI's middleware
    stack, route table and dependency injection, whose work per request showed in the router's CPU per
    request (the proxy answers every error itself, in OpenAI's shape). For the same reason the proxy is a
    plain attribute of the app rather than an entry of `app.state`.
    """

    proxy: Proxy | None = None  # set by the lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = ENDPOINTS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is not None and scope["method"] == "POST" and self.proxy is not None:
            response = await self.proxy.handle(Request(scope, receive), endpoint)
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


@contextlib.asynccontextmanager
async def lifespan(app: RouterApp) -> AsyncIterator[None]:
    """Serving: the proxy on its own upstream client, and the adapter manager; both stopped when serving ends."""
    settings: RouterSettings = app.state.settings
    state: RouterState = app.state.router_state
    upstream = UpstreamClient(settings.connect_timeout_s)
    app.proxy = Proxy(state, upstream, settings, app.state.metrics, app.state.keys)
    try:
        async with adapter_manager(state, settings):
            yield
    finally:
        app.proxy = None
        upstream.close()


def load_routes(settings: RouterSettings) -> dict[str, ServerRoute]:
    if settings.routes_file is None:
        return {}
    raw = json.loads(settings.routes_file.read_text(encoding="utf-8"))
    return {name: ServerRoute.model_validate(route) for name, route in raw.items()}


def create_app(settings: RouterSettings, routes: Mapping[str, ServerRoute] | None = None) -> RouterApp:
    """The router for `settings`, starting with `routes` (plus settings.routes_file)."""
    app = RouterApp(title="Loraplane router", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.keys = auth.load_keys(settings.api_keys_file)
    app.state.metrics = RouterMetrics()
    app.state.router_state = RouterState({**load_routes(settings), **(routes or {})})
    errors.add_handlers(app)
    for api in (openai_api.router, admin.router, health.router):
        app.include_router(api)
    return app
