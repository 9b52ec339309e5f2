"""The one module that talks to the router's admin API (the operator never calls vLLM directly).

The operator publishes one :class:`~loraplane.api.route.ServerRoute` per ModelServer
(`PUT /admin/v1/servers/{key}`); the router loads and unloads the adapters on each replica (its adapter
manager) and reports back what every replica holds (`GET`, a :class:`~loraplane.api.route.ServerStatus`).
Both sides use the models of :mod:`loraplane.api.route`.

urllib only: calls are synchronous and run in kopf's handler threads.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from loraplane.api.route import ADMIN_PREFIX, ServerRoute, ServerStatus
from loraplane.operator.settings import OperatorSettings

logger = logging.getLogger(__name__)


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

    def put(self, key: str, route: ServerRoute) -> None:
        """Publish (create or replace) the route of server `key`."""
        self._call("PUT", key, route.model_dump(mode="json"))
        logger.info("router: published %s (%d replicas, %d models)", key, len(route.replicas), len(route.adapters))

    def get(self, key: str) -> ServerStatus | None:
        """The route and per-replica state the router holds for `key`, or None when it holds none."""
        status, raw = self._call("GET", key)
        if status == 404:
            return None
        try:
            return ServerStatus.model_validate_json(raw)
        except ValueError as exc:
            raise RouterUnavailable(f"GET {ADMIN_PREFIX}/{key}: unexpected body ({exc})") from exc

    def delete(self, key: str) -> bool:
        """Remove the route of `key`; False when the router did not hold it."""
        status, _ = self._call("DELETE", key)
        return status != 404


_routers: dict[tuple[str, str | None, float], RouterClient] = {}


def admin_key(settings: OperatorSettings) -> str | None:
    """The router's admin key: the key file's content when it has one (the Secret as the kubelet keeps it
    current), else the key setting."""
    if settings.router_admin_key_file is not None:
        try:
            key = settings.router_admin_key_file.read_text(encoding="utf-8").strip()
        except OSError:
            key = ""
        if key:
            return key
    return settings.router_admin_key.get_secret_value() if settings.router_admin_key else None


def router_for(settings: OperatorSettings) -> RouterClient | None:
    """The router admin client of these settings and the current admin key (None when no router URL is set)."""
    if not settings.router_url:
        return None
    key = admin_key(settings)
    cache_key = (settings.router_url, key, settings.router_timeout_seconds)
    if cache_key not in _routers:
        _routers[cache_key] = RouterClient(settings.router_url, key, timeout=settings.router_timeout_seconds)
    return _routers[cache_key]
