"""Pure mapping from what the ModelServer controller observed to the status it writes.

Conditions (all carry observedGeneration, so Argo CD / Flux can tell whether they describe the spec in git):

* `Ready`       every replica ready and every public name served at the version the spec asks for
                (routed by the router and loaded on every ready replica).
* `Progressing` the cluster is converging: pods rolling out or starting, a new adapter version loading
                before traffic shifts, a pinned FineTuneJob still training.
* `Degraded`    drift the controller cannot fix by itself: an invalid spec, a source that does not
                resolve (job missing, failed, gate failed, namespace not allowed), a public name another
                ModelServer owns, the router unreachable or refusing the route, an adapter a replica
                refuses to load, pods that cannot start (image pull, crash loop).
`Accepted` (and `Failed` for an invalid spec) come from the shared admission rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loraplane.api.common import Condition, ConditionStatus
from loraplane.api.conditions import ConditionType, ServerReason, get_condition, set_condition, short
from loraplane.api.lora_rules import Problem
from loraplane.api.modelserver import ModelServerSpec, ModelServerStatus, ReplicaAdapters, ResolvedAdapter
from loraplane.api.route import ServerStatus
from loraplane.operator.modelserver_builders import CONTAINER, FETCH_CONTAINER, pod_ready
from loraplane.operator.modelserver_resolve import AdapterPlan, Version
from loraplane.operator.modelserver_route import loaded_everywhere
from loraplane.operator.status import admission_conditions, problems_message

MAX_SUMMARY = 1024  # characters of status.adapterSummary
BROKEN_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff", "CreateContainerError"}


@dataclass(frozen=True)
class ServerSnapshot:
    """Everything the status is computed from (read from the API server and the router)."""

    generation: int
    problems: Sequence[Problem]
    spec: ModelServerSpec | None
    deployment: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    replica_urls: Mapping[str, str] = field(default_factory=dict)  # ready pod name -> URL
    plans: Sequence[AdapterPlan] = ()
    router: ServerStatus | None = None  # what the router holds after this reconcile
    router_configured: bool = True
    router_error: str | None = None  # unavailable / rejected, with its message
    router_rejected: bool = False
    router_key: str = ""


def _version_label(v: Version) -> str:
    who = v.fine_tune_job or v.uri.rstrip("/").rsplit("/", 1)[-1]
    return f"{who}@{v.digest[:12]}"


def summary(plans: Sequence[AdapterPlan]) -> str:
    """`medical=med-v3@3f2a9c1d0e4b, finance=fin-v1@... (canary fin-v2@... 10%)` for `kubectl get ms`."""
    parts = []
    for plan in plans:
        if plan.blocked or plan.stable is None:
            parts.append(f"{plan.name}=-")
            continue
        text = f"{plan.name}={_version_label(plan.stable)}"
        routed = plan.versions
        if len(routed) == 2 and plan.canary is not None:
            text += f" (canary {_version_label(plan.canary)} {plan.canary_weight}%)"
        elif len(routed) == 1 and plan.canary is not None and routed[0][0] is plan.canary:
            text = f"{plan.name}={_version_label(plan.canary)} (canary 100%)"
        parts.append(text)
    return short(", ".join(parts), MAX_SUMMARY)


def _served(plan: AdapterPlan, state: ServerStatus | None, urls: Sequence[str]) -> bool:
    """Routed with exactly the planned versions and weights, each loaded on every ready replica."""
    if state is None or plan.blocked or not plan.versions or not urls:
        return False
    model = state.route.models().get(plan.name)
    if model is None:
        return False
    wanted = {(v.lora_name(plan.name), w) for v, w in plan.versions}
    if {(v.name, v.weight) for v in model.versions} != wanted:
        return False
    return all(loaded_everywhere(name, state, urls) for name, _ in wanted)


def resolved(plan: AdapterPlan, served: bool) -> ResolvedAdapter:
    stable, canary = plan.stable, plan.canary if plan.canary_weight > 0 else None
    messages = [i.message for i in plan.issues]
    if plan.fallback and stable is not None:
        messages.append(f"still serving the previous version {_version_label(stable)}")
    return ResolvedAdapter(
        name=plan.name,
        fine_tune_job=stable.fine_tune_job if stable else None,
        uri=stable.uri if stable else "",
        sha256=stable.sha256 if stable else "",
        version=stable.lora_name(plan.name) if stable else "",
        canary_fine_tune_job=canary.fine_tune_job if canary else None,
        canary_uri=canary.uri if canary else None,
        canary_sha256=(canary.sha256 or None) if canary else None,
        canary_version=canary.lora_name(plan.name) if canary else None,
        canary_weight=plan.canary_weight if canary else None,
        served=served,
        message=short("; ".join(messages)),
    )


def _pod_problems(pods: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(broken, unschedulable) messages of the live pods."""
    broken, pending = [], []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue
        name = meta.get("name", "?")
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            if cs.get("name") not in (CONTAINER, FETCH_CONTAINER):
                continue
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in BROKEN_WAITING:
                broken.append(f"pod {name} {cs['name']}: {waiting['reason']} {waiting.get('message', '')}".strip())
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if cs.get("name") == FETCH_CONTAINER and last.get("exitCode"):
                broken.append(f"pod {name}: fetching the base model failed (exit {last['exitCode']})")
        for cond in status.get("conditions") or []:
            if (cond.get("type"), cond.get("status"), cond.get("reason")) == ("PodScheduled", "False", "Unschedulable"):
                pending.append(f"pod {name} unschedulable: {cond.get('message', '')}")
    return broken, pending


def _deployment_numbers(dep: Mapping[str, Any] | None) -> dict[str, int]:
    status = (dep or {}).get("status") or {}
    meta = (dep or {}).get("metadata") or {}
    return {
        "replicas": int(status.get("replicas") or 0),
        "ready": int(status.get("readyReplicas") or 0),
        "updated": int(status.get("updatedReplicas") or 0),
        "available": int(status.get("availableReplicas") or 0),
        "generation": int(meta.get("generation") or 0),
        "observed": int(status.get("observedGeneration") or 0),
    }


def _stalled(dep: Mapping[str, Any] | None) -> str | None:
    for cond in ((dep or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return str(cond.get("message") or "the vLLM Deployment exceeded its progress deadline")
    return None


def modelserver_status(current: ModelServerStatus, snap: ServerSnapshot, timestamp: str) -> ModelServerStatus:
    """Status from the snapshot (pure)."""
    gen = snap.generation
    conds: list[Condition] = admission_conditions(current.conditions, gen, snap.problems, timestamp)
    if snap.problems or snap.spec is None:
        message = problems_message(snap.problems) if snap.problems else "spec could not be read"
        conds = set_condition(conds, ConditionType.READY, "False", ServerReason.INVALID_SPEC, message, gen, timestamp)
        conds = set_condition(
            conds, ConditionType.PROGRESSING, "False", ServerReason.INVALID_SPEC, message, gen, timestamp
        )
        conds = set_condition(conds, ConditionType.DEGRADED, "True", ServerReason.INVALID_SPEC, message, gen, timestamp)
        return current.model_copy(update={"conditions": conds, "observed_generation": gen})
    spec = snap.spec
    want = spec.replicas
    nums = _deployment_numbers(snap.deployment)
    urls = sorted(snap.replica_urls.values())
    ready_pods = [p for p in snap.pods if pod_ready(dict(p))]

    degraded: list[tuple[str, str]] = []  # (reason, message)
    progressing: list[tuple[str, str]] = []

    # --- pods and the Deployment
    broken, unschedulable = _pod_problems(snap.pods)
    if broken:
        degraded.append((ServerReason.POD_FAILING, "; ".join(broken)))
    stalled = _stalled(snap.deployment)
    if stalled:
        degraded.append((ServerReason.DEPLOYMENT_STALLED, stalled))
    rolled_out = (
        snap.deployment is not None
        and nums["observed"] >= nums["generation"]
        and nums["updated"] == want
        and nums["replicas"] == want
        and nums["available"] >= want
    )
    if want > 0 and not rolled_out:
        if unschedulable:
            progressing.append((ServerReason.UNSCHEDULABLE, "; ".join(unschedulable)))
        elif nums["updated"] < want or nums["replicas"] > want:
            progressing.append((ServerReason.ROLLING_OUT, f"rolling out: {nums['updated']}/{want} replicas updated"))
        else:
            progressing.append((ServerReason.REPLICAS_NOT_READY, f"{nums['ready']}/{want} replicas ready"))

    # --- router
    if not snap.router_configured:
        degraded.append(
            (ServerReason.ROUTER_NOT_CONFIGURED, "the operator has no router URL: adapters are resolved but not loaded")
        )
    elif snap.router_error:
        reason = ServerReason.ROUTER_REJECTED if snap.router_rejected else ServerReason.ROUTER_UNAVAILABLE
        degraded.append((reason, snap.router_error))

    # --- adapters
    adapters: list[ResolvedAdapter] = []
    all_served = True
    for plan in snap.plans:
        served = _served(plan, snap.router, urls)
        all_served = all_served and served and not plan.issues
        adapters.append(resolved(plan, served))
        for issue in plan.issues:
            (degraded if issue.severity == "Degraded" else progressing).append((issue.reason, issue.message))
        if not served and plan.versions and snap.router_configured and not snap.router_error and urls:
            names = ", ".join(v.lora_name(plan.name) for v, _ in plan.versions)
            progressing.append((ServerReason.LOADING_ADAPTERS, f"{plan.name}: loading {names} on every replica"))

    # --- replicas as the router sees them
    replica_status: list[ReplicaAdapters] = []
    load_errors: list[str] = []
    wanted_versions = {v.lora_name(p.name) for p in snap.plans for v, _ in p.versions}
    for pod in sorted(ready_pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        name = str((pod.get("metadata") or {}).get("name"))
        url = snap.replica_urls.get(name, "")
        seen = snap.router.replica(url) if snap.router is not None and url else None
        errors = sorted(f"{k}: {v}" for k, v in (seen.errors if seen else {}).items())
        replica_status.append(
            ReplicaAdapters(
                pod=name,
                url=url,
                healthy=bool(seen and seen.healthy),
                loaded=sorted(seen.loaded) if seen else [],
                errors=[short(e, 512) for e in errors],
            )
        )
        if seen is not None and seen.healthy:
            load_errors += [f"{name}: {k}: {v}" for k, v in seen.errors.items() if k in wanted_versions]
        elif seen is not None and snap.router_configured and not snap.router_error:
            progressing.append((ServerReason.LOADING_ADAPTERS, f"replica {name} is not reachable from the router yet"))
    if load_errors:
        degraded.append((ServerReason.ADAPTER_LOAD_FAILED, "; ".join(load_errors)))

    # --- conditions
    ready: tuple[ConditionStatus, str, str]
    if want == 0:
        ready = ("False", ServerReason.SCALED_TO_ZERO, "spec.replicas is 0")
    elif nums["ready"] < want or not rolled_out:
        ready = ("False", ServerReason.REPLICAS_NOT_READY, f"{nums['ready']}/{want} replicas ready")
    elif not snap.router_configured:
        ready = ("False", ServerReason.ROUTER_NOT_CONFIGURED, "no router: adapters are not loaded")
    elif snap.router_error:
        reason = ServerReason.ROUTER_REJECTED if snap.router_rejected else ServerReason.ROUTER_UNAVAILABLE
        ready = ("False", reason, "the router does not serve this ModelServer's route")
    elif not all_served:
        pending = [a.name for a in adapters if not a.served or a.message]
        ready = ("False", ServerReason.ADAPTERS_NOT_SERVED, f"not served at the desired version: {', '.join(pending)}")
    elif load_errors:
        ready = ("False", ServerReason.ADAPTER_LOAD_FAILED, "; ".join(load_errors))
    else:
        count = len(snap.plans)
        ready = ("True", ServerReason.SERVING, f"{want} replica(s) serving {count} adapter(s)")
    conds = set_condition(conds, ConditionType.READY, ready[0], ready[1], short(ready[2]), gen, timestamp)
    if progressing:
        reason, _ = progressing[0]
        text = "; ".join(dict.fromkeys(m for _, m in progressing))
        conds = set_condition(conds, ConditionType.PROGRESSING, "True", reason, short(text), gen, timestamp)
    else:
        conds = set_condition(
            conds, ConditionType.PROGRESSING, "False", ServerReason.CONVERGED, "converged", gen, timestamp
        )
    if degraded:
        reason, _ = degraded[0]
        text = "; ".join(dict.fromkeys(m for _, m in degraded))
        conds = set_condition(conds, ConditionType.DEGRADED, "True", reason, short(text), gen, timestamp)
    else:
        conds = set_condition(conds, ConditionType.DEGRADED, "False", ServerReason.HEALTHY, "no drift", gen, timestamp)

    return current.model_copy(
        update={
            "conditions": conds,
            "observed_generation": gen,
            "replicas": nums["replicas"],
            "ready_replicas": nums["ready"],
            "adapters": adapters,
            "replica_adapters": replica_status,
            "adapter_summary": summary(snap.plans),
            "router_key": snap.router_key,
        }
    )


def transitions(old: ModelServerStatus, new: ModelServerStatus) -> list[tuple[str, str, str]]:
    """Events a status change deserves: (type, reason, message)."""
    events: list[tuple[str, str, str]] = []
    before = {a.name: a for a in old.adapters}
    for adapter in new.adapters:
        prev = before.get(adapter.name)
        if prev is not None and prev.version and adapter.version and prev.version != adapter.version:
            events.append(("Normal", "AdapterPromoted", f"{adapter.name}: {prev.version} -> {adapter.version}"))
        if adapter.served and (prev is None or not prev.served or prev.version != adapter.version):
            events.append(("Normal", "AdapterServed", f"{adapter.name}: serving {adapter.version}"))
        if (
            adapter.canary_version
            and adapter.served
            and (prev is None or prev.canary_version != adapter.canary_version)
        ):
            events.append(
                ("Normal", "CanaryStarted", f"{adapter.name}: {adapter.canary_version} at {adapter.canary_weight}%")
            )
    for type_, kind in ((ConditionType.DEGRADED, "Warning"), (ConditionType.READY, "Normal")):
        was, now_ = get_condition(old.conditions, type_), get_condition(new.conditions, type_)
        if (
            now_ is not None
            and now_.status == "True"
            and (was is None or was.status != "True" or was.reason != now_.reason)
        ):
            events.append((kind, now_.reason, now_.message))
    return events
