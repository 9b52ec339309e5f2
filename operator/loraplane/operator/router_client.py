"""The one module that talks to the router's admin API (the operator never calls vLLM directly).

The operator publishes one :class:`Route` per ModelServer (`PUT /admin/v1/servers/{key}`); the router
loads and unloads the adapters on each replica (its adapter manager) and reports back what every replica
holds (`GET /admin/v1/servers/{key}`). The models below mirror the router's table types
(`loraplane.serving.router.table`, snake_case JSON) without importing them, so the operator image does not
pull in the serving stack; a contract test checks that both sides accept each other's JSON.

Standard library only (urllib): calls are synchronous and run in kopf's handler threads.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

ADMIN_PREFIX = "/admin/v1/servers"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class RouteVersion(_Wire):
    """One adapter version: its name on vLLM, where the replicas read it, and its share of the traffic."""

    name: str
    path: str
    sha256: str | None = None
    weight: int = 100


class RouteModel(_Wire):
    """A public model name and the version(s) behind it (one stable, or stable + canary)."""

    name: str
    versions: list[RouteVersion]


class Route(_Wire):
    """The router's table entry of one ModelServer (its `ServerRoute`)."""

    base_model: str
    replicas: list[str]
    adapters: list[RouteModel] = Field(default_factory=list)

    def models(self) -> dict[str, RouteModel]:
        return {m.name: m for m in self.adapters}

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class ReplicaState:
    """What the router last observed on one replica."""

    url: str
    healthy: bool
    loaded: frozenset[str]
    errors: Mapping[str, str] = field(default_factory=dict)  # adapter version -> message


@dataclass(frozen=True)
class ServerState:
    """`GET /admin/v1/servers/{key}`: the route the router holds and each replica's state."""

    route: Route
    replicas: tuple[ReplicaState, ...]

    def replica(self, url: str) -> ReplicaState | None:
        return next((r for r in self.replicas if r.url == url), None)


class RouterError(Exception):
    """A router admin call failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RouterUnavailable(RouterError):
    """Connection refused, timeout or 5xx: retried on the next reconcile."""


class RouterRejected(RouterError):
    """4xx: the router refused the route (409: a public name another server already serves)."""


def _error_text(raw: bytes) -> str:
    text = raw.decode(errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
    return text.strip()[:500]


def _str_list(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [str(k) for k in value]
    if isinstance(value, list | tuple | set | frozenset):
        return [str(v) for v in value]
    return []


def _errors(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(value, list):
        out: dict[str, str] = {}
        for item in value:
            if isinstance(item, Mapping):
                key = str(item.get("adapter") or item.get("name") or "?")
                out[key] = str(item.get("message") or item.get("error") or "")
            else:
                out[str(item)] = str(item)
        return out
    return {}


def parse_replica(url: str | None, data: Mapping[str, Any]) -> ReplicaState:
    """One replica entry of the router's report (tolerant of list-or-dict shapes)."""
    return ReplicaState(
        url=str(url or data.get("url") or data.get("replica") or ""),
        healthy=bool(data.get("healthy", False)),
        loaded=frozenset(_str_list(data.get("loaded", data.get("loaded_adapters", [])))),
        errors=_errors(data.get("errors") or {}),
    )


def parse_server_state(data: Mapping[str, Any]) -> ServerState:
    """The body of `GET /admin/v1/servers/{key}`: `{"route": ServerRoute, "replicas": [...] | {url: {...}}}`."""
    route_data = data.get("route") if isinstance(data.get("route"), Mapping) else data
    route = Route.model_validate(route_data)
    raw = data.get("replicas_status", data.get("status", data.get("replicas")))
    replicas: list[ReplicaState] = []
    if isinstance(raw, Mapping):
        replicas = [parse_replica(url, v) for url, v in raw.items() if isinstance(v, Mapping)]
    elif isinstance(raw, list):
        replicas = [parse_replica(None, v) for v in raw if isinstance(v, Mapping)]
    return ServerState(route=route, replicas=tuple(replicas))


class RouterClient:
    """Admin API of one router: publish, read back and remove the route of a ModelServer."""

    def __init__(self, base_url: str, admin_key: str | None, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = admin_key
        self.timeout = timeout

    def _url(self, key: str) -> str:
        return f"{self.base_url}{ADMIN_PREFIX}/{urllib.parse.quote(key, safe='')}"

    def _call(self, method: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, bytes]:
        headers = {"Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self._url(key), data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            status = int(exc.code)
            message = f"{method} {ADMIN_PREFIX}/{key}: {status} {_error_text(raw)}"
            if status >= 500:
                raise RouterUnavailable(message, status=status) from exc
            if status == 404 and method in ("GET", "DELETE"):
                return status, raw
            raise RouterRejected(message, status=status) from exc
        except (OSError, urllib.error.URLError) as exc:  # refused, reset, timeout, DNS
            raise RouterUnavailable(f"{method} {self.base_url}: {exc}") from exc

    def put(self, key: str, route: Route) -> None:
        """Publish (create or replace) the route of server `key`."""
        self._call("PUT", key, route.wire())
        logger.info("router: published %s (%d replicas, %d models)", key, len(route.replicas), len(route.adapters))

    def get(self, key: str) -> ServerState | None:
        """The route and per-replica state the router holds for `key`, or None when it holds none."""
        status, raw = self._call("GET", key)
        if status == 404:
            return None
        try:
            data = json.loads(raw)
            if not isinstance(data, Mapping):
                raise ValueError("not an object")
            return parse_server_state(data)
        except ValueError as exc:
            raise RouterUnavailable(f"GET {ADMIN_PREFIX}/{key}: unexpected body ({exc})") from exc

    def delete(self, key: str) -> bool:
        """Remove the route of `key`; False when the router did not hold it."""
        status, _ = self._call("DELETE", key)
        return status != 404
