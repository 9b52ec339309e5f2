"""The one idempotent FineTuneJob reconcile: apply children, observe them, write the status that follows.

Everything it needs is read from the API server, so it can run after any restart, from any trigger
(the FineTuneJob's spec changed or the operator started, one of its Pods or its Job changed, a retry).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from loraplane.api.common import API_VERSION
from loraplane.api.conditions import ConditionType, get_condition, now
from loraplane.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from loraplane.operator import builders, kube, metrics
from loraplane.operator.builders import LABEL_JOB, Owner
from loraplane.operator.coalesce import Coalescer
from loraplane.operator.observe import Snapshot, finetunejob_status
from loraplane.operator.settings import OperatorSettings
from loraplane.operator.status import status_patch
from loraplane.operator.validation import finetunejob_problems

logger = logging.getLogger(__name__)

# post_event(object, type, reason, message): a Normal or Warning Event on the FineTuneJob `object`.
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]
KIND = "FineTuneJob"
# Holds the deletion of a FineTuneJob with retentionPolicy Delete until its adapter is gone. Not kopf's
# finalizer (settings.finalizer): kopf removes that one from objects none of its handlers need it on.
ADAPTER_FINALIZER = "loraplane.io/adapter-cleanup"


_rounds: Coalescer[FineTuneJobStatus | None] = Coalescer()
# Namespace -> when this process last applied the trainer ServiceAccount and RoleBinding there. They are
# shared by every run in the namespace: applied again at most every IDENTITY_REFRESH_S (so one deleted by
# hand comes back within that), not on every new Job (200 jobs at once would be 400 identical applies).
_identities: dict[str, float] = {}
IDENTITY_REFRESH_S = 60.0


def forget(namespace: str, name: str) -> None:
    _rounds.forget((namespace, name))
    metrics.record_phase(namespace, name, None)


def wants_round(event_type: str | None, body: Mapping[str, Any]) -> bool:
    """Whether a FineTuneJob watch event asks for a round that applies the children.

    Yes for the operator's start-up listing (type None: converge whatever happened while it was down)
    and for a spec generation the status has not observed yet (a new object, or an edit). Every other
    event is the status this controller wrote coming back, or a metadata change: nothing to do.
    """
    meta = body.get("metadata") or {}
    if event_type == "DELETED" or meta.get("deletionTimestamp"):
        return False
    return event_type is None or (body.get("status") or {}).get("observedGeneration") != meta.get("generation")


def is_finished(status: FineTuneJobStatus) -> bool:
    return any(
        (c := get_condition(status.conditions, t)) is not None and c.status == "True"
        for t in (ConditionType.SUCCEEDED, ConditionType.FAILED)
    )


def _apply_identity(namespace: str, settings: OperatorSettings) -> None:
    last = _identities.get(namespace)
    if last is not None and time.monotonic() - last < IDENTITY_REFRESH_S:
        return
    for obj in builders.trainer_identity(namespace, settings):
        kube.apply(obj, settings.field_manager)
    _identities[namespace] = time.monotonic()


def _apply_children(owner: Owner, spec: FineTuneJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    """Server-side apply every child; returns the Job as the API server holds it after the apply."""
    _apply_identity(owner.namespace, settings)
    job: dict[str, Any] = {}
    for child in builders.children(owner, spec, settings):
        if child["kind"] in ("ServiceAccount", "RoleBinding"):
            continue
        job = kube.apply(child, settings.field_manager)
    return job


def observe(
    owner: Owner,
    spec: FineTuneJobSpec | None,
    generation: int,
    problems: list[Any],
    *,
    job: dict[str, Any] | None = None,
) -> Snapshot:
    """Read the children into a snapshot (the Job by its deterministic name, the Pods by label).

    A Job the apply just created has no Pods yet (its status counts none): the list is skipped, and the
    Pods' own events bring the next round.
    """
    if job is None:
        job = kube.get("batch/v1", "Job", owner.namespace, builders.job_name(owner.name))
    if job is not None and not any(ref.get("uid") == owner.uid for ref in job["metadata"].get("ownerReferences", [])):
        job = None  # a leftover of an earlier object with the same name: not ours
    pods: list[dict[str, Any]] = []
    if job is not None and not _not_started(job):
        uid = job["metadata"]["uid"]
        pods = [
            p
            for p in kube.list_objects("v1", "Pod", owner.namespace, f"{LABEL_JOB}={owner.name}")
            if any(ref.get("uid") == uid for ref in p["metadata"].get("ownerReferences", []))
        ]
    return Snapshot(
        generation=generation,
        problems=problems,
        suspend=bool(spec.suspend) if spec else False,
        adapter_uri=builders.adapter_uri(owner, spec) if spec else "",
        job=job,
        pods=pods,
        base_model=spec.base_model.uri if spec else "",
    )


def _not_started(job: Mapping[str, Any]) -> bool:
    """A Job the job controller has not acted on yet: no status at all (its first pod sets `active`)."""
    return not job.get("status")


def _transition_event(old: FineTuneJobStatus, new: FineTuneJobStatus) -> tuple[str, str, str] | None:
    """The Event a status change deserves (one per transition of phase or explaining reason)."""
    for type_ in (ConditionType.FAILED, ConditionType.SUCCEEDED):
        before, after = get_condition(old.conditions, type_), get_condition(new.conditions, type_)
        if after is not None and after.status == "True" and (before is None or before.status != "True"):
            return ("Warning" if type_ == ConditionType.FAILED else "Normal", after.reason, after.message)
    before, after = (
        get_condition(old.conditions, ConditionType.RUNNING),
        get_condition(new.conditions, ConditionType.RUNNING),
    )
    if after is not None and (old.phase != new.phase or before is None or before.reason != after.reason):
        warning = after.status == "False" and after.reason not in ("Pending", "JobCreating", "Suspended", "Queued")
        return ("Warning" if warning else "Normal", after.reason, f"{new.phase}: {after.message}")
    return None


def reconcile(
    body: Mapping[str, Any],
    settings: OperatorSettings,
    post_event: EventPoster,
    *,
    apply_children: bool = True,
) -> FineTuneJobStatus | None:
    """Converge one FineTuneJob. Idempotent; returns the status it wrote (or found already correct).

    Triggers for one object coalesce (see loraplane.operator.coalesce). `body` needs only the
    object's metadata (namespace, name, and uid when known): rounds read the object fresh, except that
    a whole object without a status (its create event) serves its own first round as it is: only this
    controller writes the status, so nothing newer can exist yet. That saves a read per new object.
    """
    meta = body["metadata"]
    carried = [dict(body)] if body.get("spec") is not None and not body.get("status") else []
    return _rounds.run(
        (str(meta["namespace"]), str(meta["name"])),
        lambda apply: _reconcile_once(
            meta, settings, post_event, apply_children=apply, carried=carried.pop() if carried else None
        ),
        apply=apply_children,
    )


def _reconcile_once(
    meta: Mapping[str, Any],
    settings: OperatorSettings,
    post_event: EventPoster,
    *,
    apply_children: bool,
    carried: dict[str, Any] | None = None,
) -> FineTuneJobStatus | None:
    namespace, name = str(meta["namespace"]), str(meta["name"])
    started = time.monotonic()
    try:
        # Read fresh: the body a trigger carried may be older than what another trigger wrote.
        fresh = carried or kube.get(API_VERSION, KIND, namespace, name)
        if fresh is None or (meta.get("uid") and fresh["metadata"].get("uid") != meta["uid"]):
            return None  # gone, or a new object with the same name (its own triggers handle it)
        if fresh["metadata"].get("deletionTimestamp"):
            return None  # being deleted: garbage collection and `finalize` take it from here
        return _reconcile_locked(fresh, settings, post_event, apply_children=apply_children)
    except Exception:
        metrics.RECONCILE_ERRORS.labels(kind=KIND).inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)


def _reconcile_locked(
    obj: dict[str, Any], settings: OperatorSettings, post_event: EventPoster, *, apply_children: bool
) -> FineTuneJobStatus:
    meta = obj["metadata"]
    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    generation = int(meta.get("generation") or 0)
    raw_status = dict(obj.get("status") or {})
    current = FineTuneJobStatus.model_validate(raw_status)
    problems = finetunejob_problems(dict(obj.get("spec") or {}))
    spec = None if problems else FineTuneJobSpec.model_validate(obj["spec"])
    applied_job: dict[str, Any] | None = None
    if spec is not None:
        _set_finalizer(meta, held=spec.retention_policy == "Delete")
    # status.jobName is set once the Job was observed; until then every trigger (re)applies.
    if spec is not None and not is_finished(current) and (apply_children or current.job_name is None):
        applied_job = _apply_children(owner, spec, settings)
    snap = observe(owner, spec, generation, problems, job=applied_job)
    desired = finetunejob_status(current, snap, now())
    change = status_patch(raw_status, desired)
    if change:
        kube.patch_status(API_VERSION, KIND, owner.namespace, owner.name, change)
        event = _transition_event(current, desired)
        if event is not None:
            post_event(obj, *event)
        logger.info("%s/%s: phase %s -> %s", owner.namespace, owner.name, current.phase, desired.phase)
    metrics.record_phase(owner.namespace, owner.name, desired.phase)
    return desired


def _set_finalizer(meta: Mapping[str, Any], *, held: bool) -> None:
    """Our finalizer on the object exactly when deletion must wait for us (retentionPolicy Delete).

    A conditional write (resourceVersion): a stale view fails with 409 and the round is retried, so
    nobody else's finalizer is ever dropped.
    """
    current = list(meta.get("finalizers") or [])
    desired = [f for f in current if f != ADAPTER_FINALIZER] + ([ADAPTER_FINALIZER] if held else [])
    if desired != current:
        patch = {"metadata": {"finalizers": desired, "resourceVersion": meta["resourceVersion"]}}
        kube.merge_patch(API_VERSION, KIND, meta["namespace"], meta["name"], patch)


class NotYet(Exception):
    """Deletion waits on something (the cleanup Job): ask again after `delay` seconds."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


def finalize(namespace: str, name: str, settings: OperatorSettings) -> None:
    """A FineTuneJob being deleted: with retentionPolicy Delete the adapter goes first, then our finalizer.

    Raises NotYet while the cleanup Job runs, RuntimeError when it failed (the directory is left).
    """
    obj = kube.get(API_VERSION, KIND, namespace, name)
    if obj is None or ADAPTER_FINALIZER not in (obj["metadata"].get("finalizers") or []):
        return
    if (obj.get("spec") or {}).get("retentionPolicy") == "Delete":
        waiting = delete_artifact(obj, settings)
        if waiting:
            raise NotYet(waiting, delay=3.0)
    _set_finalizer(obj["metadata"], held=False)


def delete_artifact(body: Mapping[str, Any], settings: OperatorSettings) -> str | None:
    """retentionPolicy Delete: make the adapter go away. None when done, else what is still awaited.

    A claim the operator created is owned by the FineTuneJob, so garbage collection removes it. On an
    existing claim a cleanup Job removes the run's directory; deletion waits until it completes.
    """
    spec = FineTuneJobSpec.model_validate(body["spec"])
    meta = body["metadata"]
    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    if not spec.output.storage_claim:
        return None
    job = kube.apply(builders.cleanup_job(owner, spec, settings), settings.field_manager)
    conditions = {c.get("type"): c.get("status") for c in (job.get("status") or {}).get("conditions") or []}
    if conditions.get("Complete") == "True":
        return None
    if conditions.get("Failed") == "True":
        raise RuntimeError(f"cleanup Job {job['metadata']['name']} failed; the adapter directory is left in place")
    return f"waiting for cleanup Job {job['metadata']['name']}"
