"""The one idempotent FineTuneJob round: apply children, observe them, write the status that follows;
or, once the object is being deleted, the deletion work behind our finalizer (:mod:`.deletion`).

Invariant: everything a round needs is read from the API server, so it can run after any restart and
from any trigger (the FineTuneJob's spec changed or the operator started, one of its Pods or its Job
changed, a retry). The only exception is the first round of a new object, which may use the body of its
create event as it is: only this controller writes the status, so nothing newer can exist yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from loraplane.api.common import API_VERSION
from loraplane.api.conditions import now
from loraplane.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from loraplane.api.lora_rules import Problem
from loraplane.operator import finalizers, kube, metrics
from loraplane.operator.finetunejob import builders, deletion
from loraplane.operator.finetunejob.builders import KIND
from loraplane.operator.finetunejob.status import Snapshot, finetunejob_status, finished, transition_event
from loraplane.operator.finetunejob.validation import finetunejob_problems
from loraplane.operator.names import FINALIZER_ADAPTER, LABEL_FINETUNEJOB
from loraplane.operator.owner import Owner
from loraplane.operator.runtime import Pass, Requeue, RoundFn
from loraplane.operator.settings import OperatorSettings
from loraplane.operator.status import EventPoster, report_reconcile_failed, status_patch

logger = logging.getLogger(__name__)

# Namespace -> when this process last applied the trainer ServiceAccount and RoleBinding there. They are
# shared by every run in the namespace: applied again at most every IDENTITY_REFRESH_S (so one deleted by
# hand comes back within that), not on every new Job (200 jobs at once would be 400 identical applies).
_identities: dict[str, float] = {}
IDENTITY_REFRESH_S = 60.0


class FineTuneJobController:
    """The FineTuneJob controller as the runtime drives it."""

    kind = KIND

    def __init__(self, settings: OperatorSettings, post_event: EventPoster) -> None:
        self.settings = settings
        self.post_event = post_event

    def round(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> RoundFn:
        def run(p: Pass) -> Requeue | None:
            carried = body if p.first else None
            obj = carried or kube.get(API_VERSION, KIND, namespace, name)
            if obj is None:
                return None  # gone: its children go by garbage collection
            if obj["metadata"].get("deletionTimestamp"):
                deletion.finalize(obj, self.settings)
                return None
            reconcile_object(dict(obj), self.settings, self.post_event, apply_children=p.apply)
            return None

        return run

    def report_failure(self, namespace: str, name: str, message: str) -> None:
        report_reconcile_failed(API_VERSION, KIND, namespace, name, message)

    def forget(self, namespace: str, name: str) -> None:
        metrics.record_phase(namespace, name, None)


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
    problems: list[Problem],
    *,
    job: dict[str, Any] | None = None,
) -> Snapshot:
    """Read the children into a snapshot (the Job by its deterministic name, the Pods by label).

    A Job the apply just created has no Pods yet (its status counts none): the list is skipped, and the
    Pods' own events bring the next round.
    """
    if job is None:
        job = kube.get("batch/v1", "Job", owner.namespace, builders.job_name(owner.name))
    if job is not None and not _owned_by(job, owner.uid):
        job = None  # a leftover of an earlier object with the same name: not ours
    pods: list[dict[str, Any]] = []
    if job is not None and job.get("status"):  # no status: the job controller has not acted on it yet
        uid = job["metadata"]["uid"]
        selector = f"{LABEL_FINETUNEJOB}={owner.name}"
        pods = [p for p in kube.list_objects("v1", "Pod", owner.namespace, selector) if _owned_by(p, uid)]
    return Snapshot(
        generation=generation,
        problems=problems,
        suspend=bool(spec.suspend) if spec else False,
        adapter_uri=builders.adapter_uri(owner, spec) if spec else "",
        job=job,
        pods=pods,
        base_model=spec.base_model.uri if spec else "",
    )


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", []))


def reconcile_object(
    obj: dict[str, Any], settings: OperatorSettings, post_event: EventPoster, *, apply_children: bool
) -> FineTuneJobStatus:
    """Converge one FineTuneJob that is not being deleted; returns the status it wrote (or found right)."""
    owner = Owner.of(obj)
    generation = int(obj["metadata"].get("generation") or 0)
    raw_status = dict(obj.get("status") or {})
    current = FineTuneJobStatus.model_validate(raw_status)
    problems = finetunejob_problems(dict(obj.get("spec") or {}))
    spec = None if problems else FineTuneJobSpec.model_validate(obj["spec"])
    applied_job: dict[str, Any] | None = None
    if spec is not None:
        finalizers.hold(obj, FINALIZER_ADAPTER, held=spec.retention_policy == "Delete")
    # status.jobName is set once the Job was observed; until then every trigger (re)applies.
    if spec is not None and not finished(current.conditions) and (apply_children or current.job_name is None):
        applied_job = _apply_children(owner, spec, settings)
    snap = observe(owner, spec, generation, problems, job=applied_job)
    desired = finetunejob_status(current, snap, now())
    change = status_patch(raw_status, desired)
    if change:
        kube.patch_status(API_VERSION, KIND, owner.namespace, owner.name, change)
        event = transition_event(current, desired)
        if event is not None:
            post_event(obj, *event)
        logger.info("%s/%s: phase %s -> %s", owner.namespace, owner.name, current.phase, desired.phase)
    metrics.record_phase(owner.namespace, owner.name, desired.phase)
    return desired
