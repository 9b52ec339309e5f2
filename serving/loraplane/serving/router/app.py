"""The router app: factory + lifespan (one pooled aiohttp session, the adapter reconcile loop), the routes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from loraplane.serving.adapter_manager import AdapterManager
from loraplane.serving.router import auth
from loraplane.serving.router.admin import PREFIX, Admin
from loraplane.serving.router.errors import RouterError
from loraplane.serving.router.metrics import RouterMetrics
from loraplane.serving.router.proxy import Proxy
from loraplane.serving.router.settings import RouterSettings
from loraplane.serving.router.state import RouterState
from loraplane.serving.router.table import ServerRoute
from loraplane.serving.router.upstream import UpstreamClient
from loraplane.serving.vllm_client import VllmClient

logger = logging.getLogger("loraplane.router")


async def reconcile_replica(
    state: RouterState, manager: AdapterManager, replica: str, interval: float, wake: asyncio.Event
) -> None:
    """Keep one replica holding its server's versions: after every change, else every `interval`.

    One loop per replica, so a replica that hangs or restarts never delays the others.
    """
    try:
        while True:
            wake.clear()
            desired = state.desired().get(replica)
            if desired is None:
                return  # no longer part of any route
            try:
                state.reports[replica] = await manager.reconcile(replica, desired)
            except Exception:  # keep the loop alive; the next round starts from what the replica reports
                logger.exception("adapter reconcile on %s failed", replica)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=interval)
    finally:
        state.drop_listener(wake)


async def reconcile_forever(state: RouterState, manager: AdapterManager, interval: float) -> None:
    """Start a reconcile loop for every replica named in the table (and again if one ended)."""
    loops: dict[str, asyncio.Task[None]] = {}
    wake = state.listener()
    try:
        while True:
            wake.clear()
            for replica in state.desired():
                if replica not in loops or loops[replica].done():
                    loops[replica] = asyncio.create_task(
                        reconcile_replica(state, manager, replica, interval, state.listener())
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=interval)
    finally:
        for task in loops.values():
            task.cancel()
        await asyncio.gather(*loops.values(), return_exceptions=True)
        state.drop_listener(wake)


def load_routes(settings: RouterSettings) -> dict[str, ServerRoute]:
    if settings.routes_file is None:
        return {}
    raw = json.loads(settings.routes_file.read_text(encoding="utf-8"))
    return {name: ServerRoute.model_validate(route) for name, route in raw.items()}


# The request path: served before FastAPI's middleware stack and route table (the proxy answers every
# error itself, in OpenAI's shape), which takes a fifth of the router's CPU per request off.
HOT_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}


class RouterApp(FastAPI):
    """FastAPI for everything but the two inference endpoints, which go to the proxy directly."""

    proxy: Proxy | None = None  # set by the lifespan once the pooled session exists

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = HOT_PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
        if endpoint is not None and scope["method"] == "POST" and self.proxy is not None:
            response = await self.proxy.handle(Request(scope, receive), endpoint)
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: RouterSettings, routes: Mapping[str, ServerRoute] | None = None) -> FastAPI:
    """The router for `settings`, starting with `routes` (plus settings.routes_file)."""
    keys = auth.load_keys(settings.api_keys_file)
    initial = {**load_routes(settings), **(routes or {})}
    metrics = RouterMetrics()
    holder: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: RouterApp) -> AsyncIterator[None]:
        state = RouterState(initial)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
        session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
        manager = AdapterManager(VllmClient(session), state, drain_timeout=settings.drain_timeout_s)
        upstream = UpstreamClient(settings.connect_timeout_s)
        holder.update(state=state, proxy=Proxy(state, upstream, settings, metrics, keys), admin=Admin(state, settings))
        task = asyncio.create_task(reconcile_forever(state, manager, settings.reconcile_interval_s))
        app.proxy = holder["proxy"]
        try:
            yield
        finally:
            app.proxy = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            upstream.close()
            await session.close()

    app = RouterApp(title="Loraplane router", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.holder = holder
    app.state.metrics = metrics

    @app.exception_handler(RouterError)
    async def router_error(request: Request, exc: RouterError) -> Response:
        return exc.response(request.headers.get("x-request-id"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        logger.error("unhandled error on %s", request.url.path, exc_info=exc)
        error = RouterError(500, f"Internal router error ({type(exc).__name__}).", type="server_error")
        return error.response(request.headers.get("x-request-id"))

    async def inference(request: Request) -> Response:
        proxy: Proxy = holder["proxy"]
        return await proxy.handle(request, HOT_PATHS[request.url.path])

    async def models(request: Request) -> Response:
        state: RouterState = holder["state"]
        try:
            who = auth.caller(request.headers, keys)
        except RouterError as exc:
            return exc.response(request.headers.get("x-request-id"))
        data = []
        for name, target in sorted(state.targets.items()):
            if not who.may_use(name):
                continue
            base = target.route.base_model
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "loraplane",
                    "root": base,
                    "parent": base if target.model is not None else None,
                }
            )
        return JSONResponse({"object": "list", "data": data})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        state: RouterState = holder["state"]
        ready = state.any_healthy()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # Plain Starlette routes (reached before the lifespan ran, or with a method other than POST).
    for path in HOT_PATHS:
        app.add_route(path, inference, methods=["POST"])
    app.add_route("/v1/models", models, methods=["GET"])
    app.add_route("/healthz", healthz, methods=["GET"])
    app.add_route("/readyz", readyz, methods=["GET"])
    app.add_route("/metrics", prometheus, methods=["GET"])

    async def admin_call(request: Request, method: str) -> Response:
        admin: Admin = holder["admin"]
        try:
            handler = getattr(admin, method)
            response: Response = await handler(request)
            return response
        except RouterError as exc:
            return exc.response(request.headers.get("x-request-id"))

    async def servers(request: Request) -> Response:
        return await admin_call(request, "list_servers")

    async def server(request: Request) -> Response:
        method = {"GET": "get_server", "PUT": "put_server", "DELETE": "delete_server"}[request.method]
        return await admin_call(request, method)

    app.add_route(PREFIX, servers, methods=["GET"])
    app.add_route(PREFIX + "/{name}", server, methods=["GET", "PUT", "DELETE"])
    return app
