"""The admin API: put, read and delete a server's route; read what each replica holds. Admin key only."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from loraplane.api.route import ADMIN_PREFIX, ReplicaStatus, ServerStatus
from loraplane.serving.router import auth
from loraplane.serving.router.errors import RouterError, bad_request
from loraplane.serving.router.settings import RouterSettings
from loraplane.serving.router.state import RouterState
from loraplane.serving.router.table import ServerRoute, conflict

PREFIX = ADMIN_PREFIX


def server_status(state: RouterState, name: str) -> dict[str, Any]:
    """The route as stored and, per replica, its health, the versions it holds and load errors."""
    route = state.routes[name]
    replicas = [
        ReplicaStatus(
            url=url,
            healthy=state.healthy.get(url, False),
            loaded=sorted(state.loaded.get(url, frozenset())),
            errors=dict(report.errors) if (report := state.reports.get(url)) else {},
        )
        for url in route.replicas
    ]
    return ServerStatus(name=name, route=route, replicas=replicas).model_dump(mode="json")


class Admin:
    def __init__(self, state: RouterState, settings: RouterSettings) -> None:
        self.state, self.settings = state, settings

    def _check(self, request: Request) -> None:
        auth.require_admin(request.headers, self.settings.admin_key)

    async def list_servers(self, request: Request) -> Response:
        self._check(request)
        return JSONResponse({"servers": [server_status(self.state, n) for n in sorted(self.state.routes)]})

    async def get_server(self, request: Request) -> Response:
        self._check(request)
        name = request.path_params["name"]
        if name not in self.state.routes:
            raise RouterError(404, f"No server named {name!r}.", code="not_found")
        return JSONResponse(server_status(self.state, name))

    async def put_server(self, request: Request) -> Response:
        self._check(request)
        name = request.path_params["name"]
        try:
            route = ServerRoute.model_validate(json.loads(await request.body()))
        except ValueError as exc:
            if isinstance(exc, ValidationError):
                first = exc.errors()[0]
                field = ".".join(str(p) for p in first["loc"])
                raise bad_request(f"{field}: {first['msg']}", field) from exc
            raise bad_request(f"The body is not valid JSON: {exc}") from exc
        clash = conflict(self.state.routes, name, route)
        if clash:
            raise RouterError(409, clash, code="conflict")
        self.state.put(name, route)
        return JSONResponse(server_status(self.state, name))

    async def delete_server(self, request: Request) -> Response:
        self._check(request)
        name = request.path_params["name"]
        if not self.state.delete(name):
            raise RouterError(404, f"No server named {name!r}.", code="not_found")
        return Response(status_code=204)
