"""The one idempotent ModelServer reconcile: resolve versions, apply children, publish the route, write status.

Every round starts from what the API server and the router hold, so it can run after any restart and
from any trigger (the ModelServer changed, one of its pods changed, a FineTuneJob finished, the timer):

1. read the ModelServer and the FineTuneJobs its sources may name (own namespace + allowed ones);
2. resolve every public name to a version (:mod:`modelserver_resolve`);
3. server-side apply the Service, the PodDisruptionBudget and the vLLM Deployment;
4. list the ready vLLM pods -> replica URLs;
5. publish the route to the router in safe steps (:mod:`modelserver_route`): a new version is staged at
   weight 0 until every replica reports it loaded, then traffic shifts and the old version drains;
6. read back what each replica holds and write the status (:mod:`modelserver_status`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loraplane.api.conditions import get_condition, now
from loraplane.api.modelserver import ModelServerSpec, ModelServerStatus
from loraplane.api.route import ServerStatus
from loraplane.operator import kube, metrics
from loraplane.operator import modelserver_builders as msb
from loraplane.operator.coalesce import Coalescer
from loraplane.operator.modelserver_resolve import (
    AdapterPlan,
    Claim,
    JobInfo,
    resolve_all,
    source_namespaces,
    store_claims,
)
from loraplane.operator.modelserver_route import desired_route, next_step, same_route
from loraplane.operator.modelserver_status import ServerSnapshot, modelserver_status, transitions
from loraplane.operator.router_client import RouterClient, RouterError, RouterRejected
from loraplane.operator.settings import OperatorSettings
from loraplane.operator.status import status_patch
from loraplane.operator.validation import modelserver_problems

logger = logging.getLogger(__name__)

API = "loraplane.io/v1alpha1"
KIND = "ModelServer"
ROLLOUT_POLL_SECONDS = 0.2


# post_event(object, type, reason, message): an Event on the ModelServer `object`.
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]
Claims = Mapping[str, Iterable[Claim]]


def router_key(namespace: str, name: str) -> str:
    """The ModelServer's entry in the router's table; also its base model's public name."""
    return msb.served_model_name(namespace, name)


_routers: dict[tuple[str, str | None, float], RouterClient] = {}


def router_for(settings: OperatorSettings) -> RouterClient | None:
    """The router admin client of these settings (None when no router URL is configured)."""
    if not settings.router_url:
        return None
    key = settings.router_admin_key.get_secret_value() if settings.router_admin_key else None
    cache_key = (settings.router_url, key, settings.router_timeout_seconds)
    if cache_key not in _routers:
        _routers[cache_key] = RouterClient(settings.router_url, key, timeout=settings.router_timeout_seconds)
    return _routers[cache_key]


# ------------------------------------------------------------------------------------------ coalescing


_rounds: Coalescer[Outcome | None] = Coalescer()


@dataclass(frozen=True)
class Outcome:
    status: ModelServerStatus
    invalid: str | None  # the problems message when the spec is invalid


def reconcile(
    namespace: str,
    name: str,
    settings: OperatorSettings,
    post_event: EventPoster,
    *,
    claims: Claims | None = None,
    apply_children: bool = True,
) -> Outcome | None:
    """Converge one ModelServer. Idempotent; returns what it wrote (None: it is gone, or coalesced).

    Triggers for one object coalesce (see loraplane.operator.coalesce).
    """
    return _rounds.run(
        (namespace, name),
        lambda apply: _timed(namespace, name, settings, post_event, claims, apply),
        apply=apply_children,
    )


def _timed(
    namespace: str,
    name: str,
    settings: OperatorSettings,
    post_event: EventPoster,
    claims: Claims | None,
    apply: bool,
) -> Outcome | None:
    started = time.monotonic()
    try:
        obj = kube.get(API, KIND, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None
        return reconcile_object(obj, settings, post_event, claims=claims, apply_children=apply)
    except Exception:
        metrics.RECONCILE_ERRORS.labels(kind=KIND).inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)


def forget(namespace: str, name: str, settings: OperatorSettings, *, wait: float = 30.0) -> bool:
    """The ModelServer is being deleted: remove its route (children go by garbage collection).

    A round that started before the deletion could publish the route again after it was removed, so
    first wait until no round runs; later rounds read the object with its deletionTimestamp and stop.
    """
    _rounds.forget((namespace, name), wait=wait)
    router = router_for(settings)
    return router.delete(router_key(namespace, name)) if router is not None else False


# ------------------------------------------------------------------------------------------ one round


def list_jobs(spec: ModelServerSpec, namespace: str) -> list[JobInfo]:
    """The FineTuneJobs the sources may name: own namespace plus the allowed namespaces they point at."""
    allowed = set(spec.allowed_namespaces or []) | {namespace}
    jobs: list[JobInfo] = []
    for ns in source_namespaces(spec, namespace):
        if ns in allowed:
            jobs += [JobInfo.from_object(o) for o in kube.list_objects(API, "FineTuneJob", ns, "")]
    return jobs


def ready_replicas(pods: list[dict[str, Any]], settings: OperatorSettings) -> dict[str, str]:
    """Ready pod name -> the URL the router reaches it at."""
    urls = {}
    for pod in pods:
        if msb.pod_ready(pod):
            url = msb.replica_url(pod, settings)
            if url:
                urls[str(pod["metadata"]["name"])] = url
    return urls


def publish(
    router: RouterClient,
    key: str,
    base_model: str,
    urls: Iterable[str],
    plans: list[AdapterPlan],
    settings: OperatorSettings,
) -> ServerStatus | None:
    """Publish the route in safe steps; returns what the router holds afterwards."""
    desired = desired_route(base_model, list(urls), plans, settings.adapter_mount_root)
    state = router.get(key)
    step = next_step(desired, state)
    if state is None or not same_route(step.route, state.route):
        router.put(key, step.route)
        state = router.get(key)
        step = next_step(desired, state)
    deadline = time.monotonic() + settings.rollout_wait_seconds
    while step.pending and time.monotonic() < deadline:
        time.sleep(ROLLOUT_POLL_SECONDS)  # the router loads the staged version on every replica meanwhile
        state = router.get(key)
        step = next_step(desired, state)
    if step.pending:
        logger.info("%s: still loading %s; traffic shifts on a later round", key, ", ".join(step.pending))
        return state
    if state is None or not same_route(step.route, state.route):
        router.put(key, step.route)
        state = router.get(key)
    return state


def reconcile_object(
    obj: dict[str, Any],
    settings: OperatorSettings,
    post_event: EventPoster,
    *,
    claims: Claims | None = None,
    apply_children: bool = True,
) -> Outcome:
    meta = obj["metadata"]
    namespace, name = str(meta["namespace"]), str(meta["name"])
    owner = msb.Owner(name=name, namespace=namespace, uid=str(meta["uid"]))
    generation = int(meta.get("generation") or 0)
    raw_status = dict(obj.get("status") or {})
    current = ModelServerStatus.model_validate(raw_status)
    problems = modelserver_problems(dict(obj.get("spec") or {}))
    key = router_key(namespace, name)
    router = router_for(settings)
    if problems:
        snap = ServerSnapshot(generation=generation, problems=problems, spec=None, router_key=key)
        return _write(obj, raw_status, current, modelserver_status(current, snap, now()), post_event, problems=True)

    spec = ModelServerSpec.model_validate(obj["spec"])
    me = Claim(str(meta.get("creationTimestamp") or ""), namespace, name)  # identity only: see Claim.same_server
    plans = resolve_all(
        spec,
        namespace=namespace,
        jobs=list_jobs(spec, namespace),
        previous=current.adapters,
        claims=claims,
        me=me if claims is not None else None,
    )
    deployment: dict[str, Any] | None = None
    if apply_children:
        for child in msb.children(owner, spec, settings, store_claims(plans)):
            applied = kube.apply(child, settings.field_manager)
            if child["kind"] == "Deployment":
                deployment = applied
    else:
        deployment = kube.get("apps/v1", "Deployment", namespace, msb.child_name(name))
    pods = kube.list_objects("v1", "Pod", namespace, f"{msb.LABEL_SERVER}={name},app.kubernetes.io/component=vllm")
    urls = ready_replicas(pods, settings)

    state: ServerStatus | None = None
    error: str | None = None
    rejected = False
    if router is not None:
        try:
            state = publish(router, key, key, urls.values(), plans, settings)
        except RouterRejected as exc:
            error, rejected = str(exc), True
        except RouterError as exc:
            error = str(exc)
        if error:
            logger.warning("%s/%s: router: %s", namespace, name, error)
    snap = ServerSnapshot(
        generation=generation,
        problems=[],
        spec=spec,
        deployment=deployment,
        pods=pods,
        replica_urls=urls,
        plans=plans,
        router=state,
        router_configured=router is not None,
        router_error=error,
        router_rejected=rejected,
        router_key=key,
    )
    return _write(obj, raw_status, current, modelserver_status(current, snap, now()), post_event, problems=False)


def _write(
    obj: Mapping[str, Any],
    raw_status: dict[str, Any],
    current: ModelServerStatus,
    desired: ModelServerStatus,
    post_event: EventPoster,
    *,
    problems: bool,
) -> Outcome:
    namespace, name = str(obj["metadata"]["namespace"]), str(obj["metadata"]["name"])
    change = status_patch(raw_status, desired)
    if change:
        kube.patch_status(API, KIND, namespace, name, change)
        for event in transitions(current, desired):
            post_event(obj, *event)
        ready = get_condition(desired.conditions, "Ready")
        logger.info(
            "%s/%s: Ready=%s (%s) %s",
            namespace,
            name,
            ready.status if ready else "?",
            ready.reason if ready else "",
            desired.adapter_summary,
        )
    invalid = None
    if problems:
        failed = get_condition(desired.conditions, "Failed")
        invalid = failed.message if failed else "invalid spec"
    return Outcome(desired, invalid)
