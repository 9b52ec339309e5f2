"""The routing table: which public model names exist, which server and vLLM adapter version serve them.

Pure lookups and checks over the routes (:mod:`loraplane.api.route`, the contract with the operator); the
admin API writes the routes, the request path reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from loraplane.api.route import AdapterVersion, PublicModel, ServerRoute


@dataclass(frozen=True)
class Target:
    """What a public name resolves to."""

    server: str
    route: ServerRoute
    model: PublicModel | None  # None: the base model itself


def index(routes: Mapping[str, ServerRoute]) -> dict[str, Target]:
    """Public name -> target, over every server (names are unique across servers; see `conflict`)."""
    table: dict[str, Target] = {}
    for server, route in routes.items():
        table[route.base_model] = Target(server, route, None)
        for model in route.adapters:
            table[model.name] = Target(server, route, model)
    return table


def conflict(routes: Mapping[str, ServerRoute], server: str, route: ServerRoute) -> str | None:
    """Why `route` cannot be put under `server` next to the other servers' routes (a name or replica clash)."""
    names = {route.base_model, *(m.name for m in route.adapters)}
    for other, existing in routes.items():
        if other == server:
            continue
        taken = names & {existing.base_model, *(m.name for m in existing.adapters)}
        if taken:
            return f"public model name(s) {sorted(taken)} already served by server {other!r}"
        shared = set(route.replicas) & set(existing.replicas)
        if shared:
            return f"replica(s) {sorted(shared)} already belong to server {other!r}"
    return None


__all__ = ["AdapterVersion", "PublicModel", "ServerRoute", "Target", "conflict", "index"]
