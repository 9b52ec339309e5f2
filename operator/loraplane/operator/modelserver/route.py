"""The route a ModelServer publishes to the router, and the safe next step towards it (pure).

A version change must not fail requests, so it goes in two steps, both derived from what the router
reports (nothing is remembered in memory):

1. *stage*: publish a version that can take all the traffic now (one that serves, or is loaded on every
   replica) at weight 100, plus the new version at weight 0. The router loads the new version on every
   replica but sends it no traffic. (The router holds at most two versions per public name, so a change
   of two versions at once, e.g. a new stable and a new canary, stages them one after the other.)
2. *shift*: once every healthy replica reports the new version loaded, publish the final weights. The
   router stops routing to the old version, drains its in-flight requests and unloads it.

A public name that is new (nothing serves it yet) or a change of weights only is published at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from loraplane.api.route import AdapterVersion, PublicModel, ServerRoute, ServerStatus
from loraplane.operator.modelserver.resolve import AdapterPlan, adapter_path


def desired_route(
    base_model: str,
    replicas: Sequence[str],
    plans: Iterable[AdapterPlan],
    mount_root: str,
    agent_port: int | None = None,
) -> ServerRoute:
    """The final route: every unblocked, resolved public name with its version(s) and weights; with
    `agent_port`, each replica's adapter calls go through its adapter agent."""
    models = []
    for plan in plans:
        versions = [
            AdapterVersion(
                name=version.lora_name(plan.name),
                path=adapter_path(version.uri, mount_root),
                sha256=version.sha256 or None,
                weight=weight,
            )
            for version, weight in plan.versions
        ]
        if versions:
            models.append(PublicModel(name=plan.name, versions=versions))
    return ServerRoute(base_model=base_model, replicas=sorted(replicas), adapters=models, agent_port=agent_port)


def loaded_everywhere(name: str, state: ServerStatus | None, replicas: Sequence[str]) -> bool:
    """True when every healthy replica among `replicas` reports `name` loaded (and at least one is healthy)."""
    if state is None:
        return False
    seen = [r for r in (state.replica(url) for url in replicas) if r is not None and r.healthy]
    return bool(seen) and all(name in r.loaded for r in seen)


@dataclass(frozen=True)
class Step:
    route: ServerRoute  # what to publish now
    pending: tuple[str, ...]  # new versions still loading (staged at weight 0); empty = the final route


def next_step(desired: ServerRoute, state: ServerStatus | None) -> Step:
    """The route to publish now, given the router's current state for this server (None: it holds none).

    The router holds at most two versions per public name, so one new version is staged at a time, next
    to a *keeper* that takes all the traffic meanwhile: a desired version that already serves, or is staged
    and loaded everywhere, if there is one; else the version that serves the most traffic now.
    """
    current = state.route.models() if state is not None else {}
    models: list[PublicModel] = []
    pending: list[str] = []
    for model in desired.adapters:
        now = current.get(model.name)
        serving = sorted((v for v in now.versions if v.weight > 0), key=lambda v: -v.weight) if now else []
        serving_names = {v.name for v in serving}
        staged_names = {v.name for v in now.versions} if now else set()
        # Ready to take traffic: serving now, or staged in the route and loaded on every replica.
        ready = [
            v
            for v in model.versions
            if v.name in serving_names
            or (v.name in staged_names and loaded_everywhere(v.name, state, desired.replicas))
        ]
        waiting = [v for v in model.versions if v not in ready]
        if not serving or not waiting:
            models.append(model)
            continue
        keeper = max(ready, key=lambda v: v.weight) if ready else serving[0]
        staged = [keeper.model_copy(update={"weight": 100}), waiting[0].model_copy(update={"weight": 0})]
        pending.append(waiting[0].name)
        models.append(PublicModel(name=model.name, versions=staged))
    return Step(desired.model_copy(update={"adapters": models}), tuple(pending))


def same_route(a: ServerRoute | None, b: ServerRoute | None) -> bool:
    """Routes compare as sets (replica order and model order do not matter)."""
    if a is None or b is None:
        return a is b

    def key(r: ServerRoute) -> tuple[object, ...]:
        return (
            r.base_model,
            r.agent_port,
            tuple(sorted(r.replicas)),
            tuple(
                sorted(
                    (m.name, tuple(sorted((v.name, v.path, v.sha256, v.weight) for v in m.versions)))
                    for m in r.adapters
                )
            ),
        )

    return key(a) == key(b)
