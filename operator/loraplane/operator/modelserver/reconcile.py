"""The one idempotent ModelServer round: resolve versions, apply children, publish the route, write status;
or, once the object is being deleted, the deletion work behind our finalizer (:mod:`.deletion`).

Every round starts from what the API server and the router hold, so it can run after any restart and
from any trigger (the ModelServer changed, one of its pods changed, a FineTuneJob finished, a requeue):

1. read the ModelServer and the FineTuneJobs its sources may name (own namespace + allowed ones);
2. resolve every public name to a version (:mod:`.resolve`);
3. server-side apply the Service, the PodDisruptionBudget and the vLLM Deployment;
4. list the ready vLLM pods -> replica URLs;
5. publish the next safe step of the route (:mod:`.publish`): a new version is staged at weight 0 until
   every replica reports it loaded, then traffic shifts and the old version drains;
6. read back what each replica holds and write the status (:mod:`.status`);
7. ask for the next round: soon while a version loads, else at the periodic resync (RESYNC_SECONDS),
   which notices what no event reports (a restarted router or replica that must be reloaded).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loraplane.api.common import API_VERSION
from loraplane.api.conditions import ConditionType, get_condition, now
from loraplane.api.modelserver import ModelServerSpec, ModelServerStatus
from loraplane.operator import finalizers, kube
from loraplane.operator.modelserver import builders as msb
from loraplane.operator.modelserver import deletion
from loraplane.operator.modelserver.builders import KIND
from loraplane.operator.modelserver.publish import RolloutPacer, publish
from loraplane.operator.modelserver.resolve import (
    AdapterPlan,
    Claim,
    JobInfo,
    resolve_all,
    source_namespaces,
    store_claims,
)
from loraplane.operator.modelserver.route import desired_route
from loraplane.operator.modelserver.status import RouteResult, ServerSnapshot, modelserver_status, transitions
from loraplane.operator.modelserver.validation import modelserver_problems
from loraplane.operator.names import FINALIZER_ROUTE, LABEL_COMPONENT, LABEL_MODELSERVER
from loraplane.operator.owner import Owner
from loraplane.operator.router_client import RouterError, RouterRejected, router_for
from loraplane.operator.runtime import Pass, Requeue, RoundFn
from loraplane.operator.settings import OperatorSettings
from loraplane.operator.status import EventPoster, report_reconcile_failed, status_patch

logger = logging.getLogger(__name__)

RESYNC_SECONDS = 10.0
Claims = Mapping[str, Iterable[Claim]]


@dataclass(frozen=True)
class Outcome:
    status: ModelServerStatus  # what the round wrote (or found right)
    requeue: Requeue | None  # when the next round should look again (None: an invalid spec, until it changes)


class ModelServerController:
    """The ModelServer controller as the runtime drives it.

    `claims` reads the public-name index (kopf keeps it from the watch stream) on the event loop, once
    per trigger: a round then works on that copy in its thread.
    """

    kind = KIND

    def __init__(
        self, settings: OperatorSettings, post_event: EventPoster, claims: Callable[[], dict[str, list[Claim]] | None]
    ) -> None:
        self.settings = settings
        self.post_event = post_event
        self.claims = claims
        self.pacer = RolloutPacer()

    def round(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> RoundFn:
        claims = self.claims()

        def run(p: Pass) -> Requeue | None:
            carried = body if p.first else None
            obj = carried or kube.get(API_VERSION, KIND, namespace, name)
            if obj is None:
                return None  # gone: its children go by garbage collection, its route went with our finalizer
            if obj["metadata"].get("deletionTimestamp"):
                deletion.finalize(obj, self.settings, self.post_event)
                return None
            outcome = reconcile_object(
                dict(obj), self.settings, self.post_event, claims=claims, apply_children=p.apply, pacer=self.pacer
            )
            return outcome.requeue

        return run

    def report_failure(self, namespace: str, name: str, message: str) -> None:
        report_reconcile_failed(API_VERSION, KIND, namespace, name, message)

    def forget(self, namespace: str, name: str) -> None:
        self.pacer.forget(msb.served_model_name(namespace, name))


# ------------------------------------------------------------------------------------------ one round


def list_jobs(spec: ModelServerSpec, namespace: str) -> list[JobInfo]:
    """The FineTuneJobs the sources may name: own namespace plus the allowed namespaces they point at."""
    allowed = set(spec.allowed_namespaces or []) | {namespace}
    jobs: list[JobInfo] = []
    for ns in source_namespaces(spec, namespace):
        if ns in allowed:
            jobs += [JobInfo.from_object(o) for o in kube.list_objects(API_VERSION, "FineTuneJob", ns, "")]
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


def _resolve(
    obj: Mapping[str, Any], spec: ModelServerSpec, current: ModelServerStatus, claims: Claims | None
) -> list[AdapterPlan]:
    """Every public name to a version, from the FineTuneJobs the spec may name and who claims which name."""
    meta = obj["metadata"]
    namespace, name = str(meta["namespace"]), str(meta["name"])
    me = Claim(str(meta.get("creationTimestamp") or ""), namespace, name)  # identity only: see Claim.same_server
    return resolve_all(
        spec,
        namespace=namespace,
        jobs=list_jobs(spec, namespace),
        previous=current.adapters,
        claims=claims,
        me=me if claims is not None else None,
    )


def _children(
    owner: Owner, spec: ModelServerSpec, plans: list[AdapterPlan], settings: OperatorSettings, *, apply: bool
) -> dict[str, Any] | None:
    """Apply the children (or only read the Deployment); the Deployment as the API server holds it."""
    if not apply:
        return kube.get("apps/v1", "Deployment", owner.namespace, msb.child_name(owner.name))
    deployment: dict[str, Any] | None = None
    for child in msb.children(owner, spec, settings, store_claims(plans)):
        applied = kube.apply(child, settings.field_manager)
        if child["kind"] == "Deployment":
            deployment = applied
    return deployment


def _publish(key: str, urls: Iterable[str], plans: list[AdapterPlan], settings: OperatorSettings) -> RouteResult:
    router = router_for(settings)
    if router is None:
        return RouteResult(configured=False)
    desired = desired_route(key, list(urls), plans, settings.adapter_mount_root, settings.agent_port)
    try:
        published = publish(router, key, desired)
    except RouterError as exc:
        logger.warning("%s: router: %s", key, exc)
        return RouteResult(configured=True, error=str(exc), rejected=isinstance(exc, RouterRejected))
    return RouteResult(configured=True, state=published.state, pending=published.pending)


def reconcile_object(
    obj: dict[str, Any],
    settings: OperatorSettings,
    post_event: EventPoster,
    *,
    claims: Claims | None = None,
    apply_children: bool = True,
    pacer: RolloutPacer | None = None,
) -> Outcome:
    """Converge one ModelServer that is not being deleted; returns what it wrote and when to look again."""
    owner = Owner.of(obj)
    generation = int(obj["metadata"].get("generation") or 0)
    raw_status = dict(obj.get("status") or {})
    current = ModelServerStatus.model_validate(raw_status)
    problems = modelserver_problems(dict(obj.get("spec") or {}))
    key = msb.served_model_name(owner.namespace, owner.name)  # the server's entry in the router's table
    if problems:
        snap = ServerSnapshot(generation=generation, problems=problems, spec=None, router_key=key)
        desired = modelserver_status(current, snap, now())
        _write(obj, raw_status, current, desired, post_event)
        return Outcome(desired, None)

    spec = ModelServerSpec.model_validate(obj["spec"])
    plans = _resolve(obj, spec, current, claims)
    finalizers.hold(obj, FINALIZER_ROUTE, held=settings.router_url is not None)  # before any route exists
    deployment = _children(owner, spec, plans, settings, apply=apply_children)
    selector = f"{LABEL_MODELSERVER}={owner.name},{LABEL_COMPONENT}={msb.COMPONENT}"
    pods = kube.list_objects("v1", "Pod", owner.namespace, selector)
    urls = ready_replicas(pods, settings)
    route = _publish(key, urls.values(), plans, settings)
    snap = ServerSnapshot(
        generation=generation,
        problems=[],
        spec=spec,
        deployment=deployment,
        pods=pods,
        replica_urls=urls,
        plans=plans,
        route=route,
        router_key=key,
    )
    pacer = pacer or RolloutPacer()
    after = pacer.next_round(key, route.pending, fast_for=settings.rollout_wait_seconds, resync=RESYNC_SECONDS)
    desired = modelserver_status(current, snap, now())
    _write(obj, raw_status, current, desired, post_event)
    return Outcome(desired, Requeue(after, apply=after >= RESYNC_SECONDS))  # a resync re-applies the children


def _write(
    obj: Mapping[str, Any],
    raw_status: dict[str, Any],
    current: ModelServerStatus,
    desired: ModelServerStatus,
    post_event: EventPoster,
) -> None:
    """Patch what changed, with the Events the transitions deserve."""
    namespace, name = str(obj["metadata"]["namespace"]), str(obj["metadata"]["name"])
    change = status_patch(raw_status, desired)
    if change:
        kube.patch_status(API_VERSION, KIND, namespace, name, change)
        for event in transitions(current, desired):
            post_event(obj, *event)
        ready = get_condition(desired.conditions, ConditionType.READY)
        logger.info(
            "%s/%s: Ready=%s (%s) %s",
            namespace,
            name,
            ready.status if ready else "?",
            ready.reason if ready else "",
            desired.adapter_summary,
        )
