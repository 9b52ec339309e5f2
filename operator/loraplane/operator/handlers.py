"""kopf entry points: thin, each unpacks kopf's arguments and calls one pure function."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf

from loraplane.api.common import GROUP, VERSION
from loraplane.api.lora_rules import Problem
from loraplane.operator import builders, kube, metrics
from loraplane.operator import reconcile as reconcile_mod
from loraplane.operator import status as status_fns
from loraplane.operator.conditions import Reason, Type, get_condition, now
from loraplane.operator.settings import OperatorSettings
from loraplane.operator.validation import modelserver_problems

SETTINGS_KEY = "loraplane_settings"
RESYNC_SECONDS = 30.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """The one place kopf is configured: storage under loraplane.io, peering, posting, timeouts."""
    cfg: OperatorSettings = memo.get(SETTINGS_KEY) or OperatorSettings()
    memo[SETTINGS_KEY] = cfg
    # Runs before kopf's watchers and peering start: make sure the peering object exists.
    targets: list[str | None] = list(cfg.namespaces) or [None]
    for namespace in targets:
        kube.ensure_peering(cfg.peering_name, namespace)
    prefix = cfg.annotation_prefix
    settings.persistence.finalizer = cfg.finalizer
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    settings.peering.name = cfg.peering_name
    settings.peering.priority = cfg.priority
    settings.peering.mandatory = True
    settings.peering.clusterwide = not cfg.namespaces
    # Events are posted explicitly, one per transition, with a CamelCase reason (not every log line).
    settings.posting.loggers = False
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "loraplane-operator"
    settings.posting.reporting_instance = socket.gethostname()
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    # Handlers are synchronous and wait on the API server: more threads, not more CPU.
    settings.execution.max_workers = cfg.max_workers
    metrics.serve(cfg.metrics_port, cfg.liveness_host)


def _admit(
    *,
    body: kopf.Body,
    spec: Mapping[str, Any],
    status: Mapping[str, Any],
    meta: Mapping[str, Any],
    patch: kopf.Patch,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    problems_of: Callable[[dict[str, Any]], list[Problem]],
    status_of: Callable[..., Any],
) -> None:
    """Validate the spec and write Accepted (or Failed/InvalidSpec); patch only what changed."""
    generation = int(meta.get("generation", 0))
    current = dict(status)
    if current.get("observedGeneration") == generation and current.get("conditions"):
        return  # already judged this generation (e.g. after an operator restart): nothing to redo
    problems = problems_of(dict(spec))
    desired = status_of(current, generation, problems, now())
    change = status_fns.status_patch(current, desired)
    if change:
        patch.status.update(change)
    if problems:
        message = status_fns.problems_message(problems)
        kopf.warn(body, reason=Reason.INVALID_SPEC, message=message)
        raise kopf.PermanentError(f"invalid spec: {message}")
    kopf.info(body, reason=Type.ACCEPTED, message=f"spec is valid (generation {generation})")
    logger.info("Accepted (generation %s)", generation)


def _poster(body: Mapping[str, Any]) -> reconcile_mod.EventPoster:
    """Events on the FineTuneJob through kopf's poster (it fills in the involved object)."""

    def post(type_: str, reason: str, message: str) -> None:
        kopf.event(cast(kopf.Body, body), type=type_, reason=reason, message=message)

    return post


def _settings(memo: kopf.Memo) -> OperatorSettings:
    cfg: OperatorSettings = memo[SETTINGS_KEY]
    return cfg


@kopf.on.resume(GROUP, VERSION, "finetunejobs")
@kopf.on.create(GROUP, VERSION, "finetunejobs")
@kopf.on.update(GROUP, VERSION, "finetunejobs", field="spec")
def finetunejob_reconcile(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Admission and reconcile in one: an invalid spec is a permanent error, everything else converges."""
    status = reconcile_mod.reconcile(body, _settings(memo), _poster(body))
    if status is None:
        return  # coalesced into a reconcile that is already running
    failed = get_condition(status.conditions, Type.FAILED)
    if failed is not None and failed.status == "True" and failed.reason == Reason.INVALID_SPEC:
        raise kopf.PermanentError(f"invalid spec: {failed.message}")


def _running(status: kopf.Status, **_: Any) -> bool:
    """Started (a Job was observed) and not finished: what the periodic resync covers.

    kopf keeps a finalizer on objects a timer matches, so the filter also keeps finalizers off new
    objects (no extra round trip before the Job is created) and off finished ones (Retain).
    """
    finished = any(
        c.get("type") in (Type.SUCCEEDED, Type.FAILED) and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return bool(status.get("jobName")) and not finished


@kopf.timer(GROUP, VERSION, "finetunejobs", interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS, when=_running)
def finetunejob_resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Level-triggered safety net: re-observe everything periodically, whatever events were missed."""
    reconcile_mod.reconcile(body, _settings(memo), _poster(body))


def _owner_changed(namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo) -> None:
    name = labels.get(builders.LABEL_JOB)
    if not namespace or not name:
        return
    obj = kube.get("loraplane.io/v1alpha1", "FineTuneJob", namespace, name)
    if obj is None:
        return
    reconcile_mod.reconcile(obj, _settings(memo), _poster(obj), apply_children=False)


@kopf.on.event("batch", "v1", "jobs", labels={builders.LABEL_JOB: kopf.PRESENT})
def training_job_changed(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    _owner_changed(namespace, labels, memo)


@kopf.on.event("", "v1", "pods", labels={builders.LABEL_JOB: kopf.PRESENT})
def training_pod_changed(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    _owner_changed(namespace, labels, memo)


def _retention_delete(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("retentionPolicy") == "Delete")


@kopf.on.delete(GROUP, VERSION, "finetunejobs", when=_retention_delete)
def finetunejob_delete_artifact(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """retentionPolicy Delete: the finalizer (only on such objects) holds deletion until the adapter is gone."""
    try:
        waiting = reconcile_mod.delete_artifact(body, _settings(memo))
    except RuntimeError as exc:
        raise kopf.TemporaryError(str(exc), delay=30) from exc
    if waiting:
        raise kopf.TemporaryError(waiting, delay=3)


@kopf.on.delete(GROUP, VERSION, "finetunejobs", optional=True)
def finetunejob_deleted(namespace: str | None, name: str | None, **_: Any) -> None:
    """Children go by garbage collection (owner references); only the in-memory bookkeeping is dropped."""
    if namespace and name:
        reconcile_mod.forget(namespace, name)


@kopf.on.resume(GROUP, VERSION, "modelservers")
@kopf.on.create(GROUP, VERSION, "modelservers")
@kopf.on.update(GROUP, VERSION, "modelservers", field="spec")
def modelserver_admission(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    _admit(
        body=body,
        spec=spec,
        status=status,
        meta=meta,
        patch=patch,
        logger=logger,
        problems_of=modelserver_problems,
        status_of=status_fns.modelserver_admission_status,
    )
