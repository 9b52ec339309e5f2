"""Pure mapping from what the ModelServer controller observed to the status it writes.

Conditions (all carry observedGeneration, so Argo CD / Flux can tell whether they describe the spec in git):

* `Ready`       every replica ready and every public name served at the version the spec asks for
                (routed by the router and loaded on every ready replica).
* `Progressing` the cluster is converging: pods rolling out or starting, a new adapter version loading
                before traffic shifts, a pinned FineTuneJob still training.
* `Degraded`    drift the controller cannot fix by itself: an invalid spec, a source that does not
                resolve (job missing, failed, gate failed, namespace not allowed), an adapter trained on
                another base model or above spec.vllm.maxLoraRank, a public name another ModelServer
                owns, the router unreachable or refusing the route, an adapter a replica refuses to
                load, pods that cannot start (image pull, crash loop).
`Accepted` (and `Failed` for an invalid spec) come from the shared admission rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loraplane.api.common import Condition
from loraplane.api.conditions import ConditionType, ServerReason, get_condition, set_condition, short
from loraplane.api.lora_rules import Problem
from loraplane.api.modelserver import ModelServerSpec, ModelServerStatus, ReplicaAdapters, ResolvedAdapter
from loraplane.api.route import ServerStatus
from loraplane.operator.admission import admission_conditions, problems_message
from loraplane.operator.modelserver.builders import CONTAINER, FETCH_CONTAINER, pod_ready
from loraplane.operator.modelserver.resolve import AdapterPlan, Version
from loraplane.operator.modelserver.route import loaded_everywhere
from loraplane.operator.status import Explanation

MAX_SUMMARY = 1024  # characters of status.adapterSummary
BROKEN_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff", "CreateContainerError"}


@dataclass(frozen=True)
class RouteResult:
    """What publishing the route left: what the router holds, or the error that prevented it."""

    configured: bool = True  # the operator has a router URL
    state: ServerStatus | None = None  # what the router holds after this round
    pending: tuple[str, ...] = ()  # staged versions still loading
    error: str | None = None  # unavailable / rejected, with its message
    rejected: bool = False  # the router refused the route (4xx), rather than being unreachable


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
    route: RouteResult = field(default_factory=RouteResult)
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


@dataclass(frozen=True)
class Finding:
    """One reason the server is not converged (Progressing) or drifted (Degraded), and what it says."""

    reason: str
    message: str


@dataclass
class Findings:
    """What a round found, sorted into the Progressing and Degraded conditions (first reason names each)."""

    progressing: list[Finding] = field(default_factory=list)
    degraded: list[Finding] = field(default_factory=list)

    def add(self, severity: str, reason: str, message: str) -> None:
        (self.degraded if severity == "Degraded" else self.progressing).append(Finding(reason, message))


@dataclass(frozen=True)
class Rollout:
    """The vLLM Deployment's numbers, and whether it has rolled out the spec's replicas."""

    want: int
    replicas: int = 0
    ready: int = 0
    updated: int = 0
    done: bool = False

    @classmethod
    def of(cls, dep: Mapping[str, Any] | None, want: int) -> Rollout:
        status = (dep or {}).get("status") or {}
        generation = int(((dep or {}).get("metadata") or {}).get("generation") or 0)
        replicas, updated = int(status.get("replicas") or 0), int(status.get("updatedReplicas") or 0)
        done = (
            dep is not None
            and int(status.get("observedGeneration") or 0) >= generation
            and updated == want
            and replicas == want
            and int(status.get("availableReplicas") or 0) >= want
        )
        return cls(want, replicas, int(status.get("readyReplicas") or 0), updated, done)


def _stalled(dep: Mapping[str, Any] | None) -> str | None:
    for cond in ((dep or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return str(cond.get("message") or "the vLLM Deployment exceeded its progress deadline")
    return None


def _pods_and_deployment(snap: ServerSnapshot, rollout: Rollout, found: Findings) -> None:
    """Pods that cannot start, a stalled Deployment (Degraded); a rollout under way (Progressing)."""
    broken, unschedulable = _pod_problems(snap.pods)
    if broken:
        found.add("Degraded", ServerReason.POD_FAILING, "; ".join(broken))
    stalled = _stalled(snap.deployment)
    if stalled:
        found.add("Degraded", ServerReason.DEPLOYMENT_STALLED, stalled)
    if rollout.want == 0 or rollout.done:
        return
    if unschedulable:
        found.add("Progressing", ServerReason.UNSCHEDULABLE, "; ".join(unschedulable))
    elif rollout.updated < rollout.want or rollout.replicas > rollout.want:
        message = f"rolling out: {rollout.updated}/{rollout.want} replicas updated"
        found.add("Progressing", ServerReason.ROLLING_OUT, message)
    else:
        found.add("Progressing", ServerReason.REPLICAS_NOT_READY, f"{rollout.ready}/{rollout.want} replicas ready")


def _router_reason(snap: ServerSnapshot) -> str:
    return ServerReason.ROUTER_REJECTED if snap.route.rejected else ServerReason.ROUTER_UNAVAILABLE


def _router(snap: ServerSnapshot, found: Findings) -> None:
    if not snap.route.configured:
        message = "the operator has no router URL: adapters are resolved but not loaded"
        found.add("Degraded", ServerReason.ROUTER_NOT_CONFIGURED, message)
    elif snap.route.error:
        found.add("Degraded", _router_reason(snap), snap.route.error)


def _router_works(snap: ServerSnapshot) -> bool:
    return snap.route.configured and not snap.route.error


def _adapters(snap: ServerSnapshot, urls: Sequence[str], found: Findings) -> list[ResolvedAdapter]:
    """Each public name as resolved and served; what stands in the way of each."""
    adapters: list[ResolvedAdapter] = []
    for plan in snap.plans:
        served = _served(plan, snap.route.state, urls)
        adapters.append(resolved(plan, served))
        for issue in plan.issues:
            found.add(issue.severity, issue.reason, issue.message)
        if not served and plan.versions and _router_works(snap) and urls:
            names = ", ".join(v.lora_name(plan.name) for v, _ in plan.versions)
            found.add("Progressing", ServerReason.LOADING_ADAPTERS, f"{plan.name}: loading {names} on every replica")
    return adapters


def _replicas(snap: ServerSnapshot, found: Findings) -> tuple[list[ReplicaAdapters], list[str]]:
    """What each ready replica holds as the router sees it, and the wanted versions it failed to load."""
    replica_status: list[ReplicaAdapters] = []
    load_errors: list[str] = []
    wanted_versions = {v.lora_name(p.name) for p in snap.plans for v, _ in p.versions}
    ready_pods = [p for p in snap.pods if pod_ready(dict(p))]
    for pod in sorted(ready_pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        name = str((pod.get("metadata") or {}).get("name"))
        url = snap.replica_urls.get(name, "")
        state = snap.route.state
        seen = state.replica(url) if state is not None and url else None
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
        elif seen is not None and _router_works(snap):
            message = f"replica {name} is not reachable from the router yet"
            found.add("Progressing", ServerReason.LOADING_ADAPTERS, message)
    if load_errors:
        found.add("Degraded", ServerReason.ADAPTER_LOAD_FAILED, "; ".join(load_errors))
    return replica_status, load_errors


def _ready(
    snap: ServerSnapshot, rollout: Rollout, adapters: Sequence[ResolvedAdapter], load_errors: Sequence[str]
) -> Explanation:
    """Ready: every replica ready and every public name served at the version the spec asks for."""
    want = rollout.want
    all_served = all(a.served for a in adapters) and not any(p.issues for p in snap.plans)
    if want == 0:
        return Explanation("False", ServerReason.SCALED_TO_ZERO, "spec.replicas is 0")
    if rollout.ready < want or not rollout.done:
        return Explanation("False", ServerReason.REPLICAS_NOT_READY, f"{rollout.ready}/{want} replicas ready")
    if not snap.route.configured:
        return Explanation("False", ServerReason.ROUTER_NOT_CONFIGURED, "no router: adapters are not loaded")
    if snap.route.error:
        return Explanation("False", _router_reason(snap), "the router does not serve this ModelServer's route")
    if not all_served:
        pending = [a.name for a in adapters if not a.served or a.message]
        message = f"not served at the desired version: {', '.join(pending)}"
        return Explanation("False", ServerReason.ADAPTERS_NOT_SERVED, message)
    if load_errors:
        return Explanation("False", ServerReason.ADAPTER_LOAD_FAILED, "; ".join(load_errors))
    return Explanation("True", ServerReason.SERVING, f"{want} replica(s) serving {len(snap.plans)} adapter(s)")


def _joined(findings: Sequence[Finding]) -> str:
    return short("; ".join(dict.fromkeys(f.message for f in findings)))


def _conditions(
    conds: list[Condition], ready: Explanation, found: Findings, gen: int, timestamp: str
) -> list[Condition]:
    """Ready, Progressing and Degraded from the explanation and the findings."""
    conds = set_condition(conds, ConditionType.READY, ready.status, ready.reason, short(ready.message), gen, timestamp)
    if found.progressing:
        reason, text = found.progressing[0].reason, _joined(found.progressing)
        conds = set_condition(conds, ConditionType.PROGRESSING, "True", reason, text, gen, timestamp)
    else:
        reason, text = ServerReason.CONVERGED, "converged"
        conds = set_condition(conds, ConditionType.PROGRESSING, "False", reason, text, gen, timestamp)
    if found.degraded:
        reason, text = found.degraded[0].reason, _joined(found.degraded)
        return set_condition(conds, ConditionType.DEGRADED, "True", reason, text, gen, timestamp)
    return set_condition(conds, ConditionType.DEGRADED, "False", ServerReason.HEALTHY, "no drift", gen, timestamp)


def _invalid(
    current: ModelServerStatus, snap: ServerSnapshot, conds: list[Condition], timestamp: str
) -> ModelServerStatus:
    gen = snap.generation
    message = problems_message(snap.problems) if snap.problems else "spec could not be read"
    for type_ in (ConditionType.READY, ConditionType.PROGRESSING):
        conds = set_condition(conds, type_, "False", ServerReason.INVALID_SPEC, message, gen, timestamp)
    conds = set_condition(conds, ConditionType.DEGRADED, "True", ServerReason.INVALID_SPEC, message, gen, timestamp)
    return current.model_copy(update={"conditions": conds, "observed_generation": gen})


def modelserver_status(current: ModelServerStatus, snap: ServerSnapshot, timestamp: str) -> ModelServerStatus:
    """Status from the snapshot (pure)."""
    gen = snap.generation
    conds: list[Condition] = admission_conditions(current.conditions, gen, snap.problems, timestamp)
    if snap.problems or snap.spec is None:
        return _invalid(current, snap, conds, timestamp)
    rollout = Rollout.of(snap.deployment, snap.spec.replicas)
    found = Findings()
    _pods_and_deployment(snap, rollout, found)
    _router(snap, found)
    adapters = _adapters(snap, sorted(snap.replica_urls.values()), found)
    replica_status, load_errors = _replicas(snap, found)
    ready = _ready(snap, rollout, adapters, load_errors)
    return current.model_copy(
        update={
            "conditions": _conditions(conds, ready, found, gen, timestamp),
            "observed_generation": gen,
            "replicas": rollout.replicas,
            "ready_replicas": rollout.ready,
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
            events.append(
                ("Normal", ServerReason.ADAPTER_PROMOTED, f"{adapter.name}: {prev.version} -> {adapter.version}")
            )
        if adapter.served and (prev is None or not prev.served or prev.version != adapter.version):
            events.append(("Normal", ServerReason.ADAPTER_SERVED, f"{adapter.name}: serving {adapter.version}"))
        if (
            adapter.canary_version
            and adapter.served
            and (prev is None or prev.canary_version != adapter.canary_version)
        ):
            events.append(
                (
                    "Normal",
                    ServerReason.CANARY_STARTED,
                    f"{adapter.name}: {adapter.canary_version} at {adapter.canary_weight}%",
                )
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
