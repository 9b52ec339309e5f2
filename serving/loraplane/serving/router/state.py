"""The router's live state: the routing table, what each replica holds, and requests in flight.

Implements the adapter manager's `RoutingHooks` for the replicas the router manages itself (no agent): the
manager reports what it observed on each replica, asks to stop routing an adapter before unloading it, and
waits until that adapter's in-flight requests on that replica are done. A replica's agent drains on vLLM's
own view instead; the router stops routing a version as soon as its table no longer names it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from loraplane.serving.adapter_manager import DesiredAdapter, ReplicaReport
from loraplane.serving.router.table import ServerRoute, Target, index


class RouterState:
    def __init__(self, routes: Mapping[str, ServerRoute] | None = None) -> None:
        self.routes: dict[str, ServerRoute] = {}
        self.targets: dict[str, Target] = {}
        self.healthy: dict[str, bool] = {}
        self.loaded: dict[str, frozenset[str]] = {}
        self.reports: dict[str, ReplicaReport] = {}
        self.stopped: set[tuple[str, str]] = set()
        self.inflight: Counter[tuple[str, str]] = Counter()
        self.outstanding: Counter[str] = Counter()
        self._listeners: set[asyncio.Event] = set()
        self.rotation = 0
        for name, route in (routes or {}).items():
            self.put(name, route)

    # -- change notification (each replica's reconcile loop listens) ---------------------------------
    def listener(self) -> asyncio.Event:
        """An event set on every change of the table or of a replica's observed state (set at first)."""
        event = asyncio.Event()
        event.set()
        self._listeners.add(event)
        return event

    def drop_listener(self, event: asyncio.Event) -> None:
        self._listeners.discard(event)

    def notify(self) -> None:
        for event in self._listeners:
            event.set()

    # -- the table -------------------------------------------------------------------------------
    def put(self, server: str, route: ServerRoute) -> None:
        self.routes[server] = route
        self.targets = index(self.routes)
        self.notify()

    def delete(self, server: str) -> bool:
        if self.routes.pop(server, None) is None:
            return False
        self.targets = index(self.routes)
        self.notify()
        return True

    def desired(self) -> dict[str, dict[str, DesiredAdapter]]:
        """Replica URL -> the adapter versions it must hold (what the adapter manager reconciles)."""
        return {
            replica: {v.name: DesiredAdapter(v.name, v.path, v.sha256) for v in route.versions().values()}
            for route in self.routes.values()
            for replica in route.replicas
        }

    def agent_url(self, replica: str) -> str | None:
        """`replica`'s adapter agent (same host) when its route names one: it manages the replica's adapters."""
        for route in self.routes.values():
            if route.agent_port and replica in route.replicas:
                parts = urlsplit(replica)
                return urlunsplit((parts.scheme, f"{parts.hostname}:{route.agent_port}", parts.path, "", ""))
        return None

    # -- RoutingHooks -----------------------------------------------------------------------------
    def observed(self, replica: str, loaded: frozenset[str], healthy: bool) -> None:
        self.healthy[replica] = healthy
        if healthy:
            self.loaded[replica] = loaded
            # An adapter that is gone from the replica may be routed again once it is loaded again.
            self.stopped = {(r, a) for r, a in self.stopped if r != replica or a in loaded}

    def stop_routing(self, replica: str, adapter: str) -> None:
        self.stopped.add((replica, adapter))

    async def wait_idle(self, replica: str, adapter: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.inflight[(replica, adapter)] > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    # -- the request path -------------------------------------------------------------------------
    def usable(self, replica: str, version: str | None) -> bool:
        """Healthy, and (for an adapter) holding it and not draining it."""
        if not self.healthy.get(replica, False):
            return False
        if version is None:
            return True
        return version in self.loaded.get(replica, frozenset()) and (replica, version) not in self.stopped

    def acquire(self, replica: str, version: str) -> None:
        self.inflight[(replica, version)] += 1
        self.outstanding[replica] += 1

    def release(self, replica: str, version: str) -> None:
        self.inflight[(replica, version)] -= 1
        self.outstanding[replica] -= 1

    def replica_failed(self, replica: str) -> None:
        """A connection to the replica failed: stop choosing it until the next reconcile sees it healthy."""
        self.healthy[replica] = False
        self.notify()

    def not_loaded(self, replica: str, version: str) -> None:
        """The replica answered that it does not know the adapter (it restarted): reload it."""
        self.loaded[replica] = self.loaded.get(replica, frozenset()) - {version}
        self.notify()

    def any_healthy(self) -> bool:
        return any(self.healthy.get(r, False) for route in self.routes.values() for r in route.replicas)
