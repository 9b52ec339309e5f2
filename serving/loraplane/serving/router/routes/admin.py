"""The admin API, admin key only: put, read and delete a server's route; read what each replica holds."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from loraplane.api.route import ADMIN_PREFIX, ReplicaStatus, ServerStatus
from loraplane.serving.router import errors
from loraplane.serving.router.deps import StateDep, require_admin
from loraplane.serving.router.routes import READ
from loraplane.serving.router.state import RouterState
from loraplane.serving.router.table import ServerRoute, conflict

router = APIRouter(prefix=ADMIN_PREFIX, dependencies=[Depends(require_admin)])  # before the body is read


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


def parse_route(body: bytes) -> ServerRoute:
    """The route in a PUT body; 400 naming the first invalid field."""
    return errors.parse_body(ServerRoute, body)


async def route_body(request: Request) -> ServerRoute:
    return parse_route(await request.body())


RouteBody = Annotated[ServerRoute, Depends(route_body)]


def no_server(name: str) -> errors.RouterError:
    return errors.not_found(f"No server named {name!r}.")


@router.api_route("", methods=READ)
async def list_servers(state: StateDep) -> Response:
    return JSONResponse({"servers": [server_status(state, name) for name in sorted(state.routes)]})


@router.api_route("/{name}", methods=READ)
async def get_server(name: str, state: StateDep) -> Response:
    if name not in state.routes:
        raise no_server(name)
    return JSONResponse(server_status(state, name))


@router.put("/{name}")
async def put_server(name: str, route: RouteBody, state: StateDep) -> Response:
    clash = conflict(state.routes, name, route)
    if clash:
        raise errors.conflict(clash)
    state.put(name, route)
    return JSONResponse(server_status(state, name))


@router.delete("/{name}")
async def delete_server(name: str, state: StateDep) -> Response:
    if not state.delete(name):
        raise no_server(name)
    return Response(status_code=204)
