"""kopf entry points: thin, each unpacks kopf's arguments and calls one pure function."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import socket
from collections.abc import Mapping
from typing import Any, cast

import kopf

from loraplane.api.common import GROUP, VERSION
from loraplane.api.modelserver import ModelServerSpec
from loraplane.operator import builders, kube, metrics
from loraplane.operator import modelserver_reconcile as ms_reconcile
from loraplane.operator import reconcile as reconcile_mod
from loraplane.operator.conditions import Reason, Type, get_condition
from loraplane.operator.modelserver_builders import LABEL_SERVER
from loraplane.operator.modelserver_resolve import Claim, name_claims, source_namespaces
from loraplane.operator.router_client import RouterError
from loraplane.operator.settings import OperatorSettings

SETTINGS_KEY = "loraplane_settings"
KOPF_SETTINGS_KEY = "kopf_settings"
RESYNC_SECONDS = 30.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """The one place kopf is configured: storage under loraplane.io, peering, posting, timeouts."""
    cfg: OperatorSettings = memo.get(SETTINGS_KEY) or OperatorSettings()
    memo[SETTINGS_KEY] = cfg
    memo[KOPF_SETTINGS_KEY] = settings
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


def _post_event(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """An Event on a FineTuneJob or ModelServer through kopf's poster (it fills in the involved object)."""
    kopf.event(cast(kopf.Body, obj), type=type_, reason=reason, message=message)


def _settings(memo: kopf.Memo) -> OperatorSettings:
    cfg: OperatorSettings = memo[SETTINGS_KEY]
    return cfg


@kopf.on.resume(GROUP, VERSION, "finetunejobs")
@kopf.on.create(GROUP, VERSION, "finetunejobs")
@kopf.on.update(GROUP, VERSION, "finetunejobs", field="spec")
def finetunejob_reconcile(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Admission and reconcile in one: an invalid spec is a permanent error, everything else converges."""
    status = reconcile_mod.reconcile(body, _settings(memo), _post_event)
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
    reconcile_mod.reconcile(body, _settings(memo), _post_event)


# A Job or Pod change of a training run triggers its FineTuneJob's reconcile after a short delay: one
# pod goes through several changes within a second (created, scheduled, started), and a run's Job and
# Pods change together, so the changes of a burst share one round instead of one round each (a round
# reads the FineTuneJob, the Job and the Pods fresh, so nothing is missed).
CHILD_EVENT_DELAY_S = 1.0
_child_rounds_due: set[tuple[str, str]] = set()


async def _owner_changed(namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo) -> None:
    name = labels.get(builders.LABEL_JOB)
    if not namespace or not name or (namespace, name) in _child_rounds_due:
        return  # a round for this FineTuneJob is already due and will see this change too
    _child_rounds_due.add((namespace, name))
    try:
        await asyncio.sleep(CHILD_EVENT_DELAY_S)
    finally:
        _child_rounds_due.discard((namespace, name))
    ref = {"metadata": {"namespace": namespace, "name": name}}
    round_ = functools.partial(reconcile_mod.reconcile, ref, _settings(memo), _post_event, apply_children=False)
    context = contextvars.copy_context()  # kopf.event() finds its queue through context variables
    executor = memo[KOPF_SETTINGS_KEY].execution.executor  # the threads kopf runs synchronous handlers in
    await asyncio.get_running_loop().run_in_executor(executor, context.run, round_)


@kopf.on.event("batch", "v1", "jobs", labels={builders.LABEL_JOB: kopf.PRESENT})
async def training_job_changed(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    await _owner_changed(namespace, labels, memo)


@kopf.on.event("", "v1", "pods", labels={builders.LABEL_JOB: kopf.PRESENT})
async def training_pod_changed(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    await _owner_changed(namespace, labels, memo)


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


# ---------------------------------------------------------------------------------------------- ModelServer
#
# One idempotent reconcile (modelserver_reconcile) behind every trigger: the ModelServer changed (or the
# operator started), one of its vLLM pods changed, a FineTuneJob it may serve finished (promotion by
# selector), and a periodic resync (the router restarted, a replica restarted and must be reloaded).
# Two kopf indices, rebuilt from the API at start-up, answer the cross-object questions.

MS_RESYNC_SECONDS = 10.0
MS_PUBLIC_NAMES = "modelserver_public_names"
MS_SOURCES = "modelserver_sources"


@kopf.index(GROUP, VERSION, "modelservers")
def modelserver_public_names(meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict[str, Claim]:
    """Public name -> every ModelServer claiming it (names are global in the router; see `Claim` for who wins)."""
    return name_claims(meta, spec, status)


@kopf.index(GROUP, VERSION, "modelservers")
def modelserver_sources(
    namespace: str | None, name: str | None, spec: kopf.Spec, **_: Any
) -> dict[str, tuple[str, str]]:
    """Namespace of FineTuneJobs -> the ModelServers whose sources may name them."""
    try:
        parsed = ModelServerSpec.model_validate(dict(spec))
    except ValueError:
        return {}
    return {ns: (namespace or "", name or "") for ns in source_namespaces(parsed, namespace or "")}


def _claims(kwargs: Mapping[str, Any]) -> dict[str, list[Claim]] | None:
    index = kwargs.get(MS_PUBLIC_NAMES)
    if index is None:
        return None
    return {str(key): list(index[key]) for key in index}


def _ms_reconcile(
    namespace: str, name: str, memo: kopf.Memo, kwargs: Mapping[str, Any], *, apply: bool
) -> ms_reconcile.Outcome | None:
    return ms_reconcile.reconcile(
        namespace,
        name,
        _settings(memo),
        _post_event,
        claims=_claims(kwargs),
        apply_children=apply,
    )


@kopf.on.resume(GROUP, VERSION, "modelservers")
@kopf.on.create(GROUP, VERSION, "modelservers")
@kopf.on.update(GROUP, VERSION, "modelservers", field="spec")
def modelserver_reconcile(
    namespace: str | None, name: str | None, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Admission and reconcile in one: an invalid spec is a permanent error (Accepted=False, Degraded)."""
    if not namespace or not name:
        return
    outcome = _ms_reconcile(namespace, name, memo, kwargs, apply=True)
    if outcome is not None and outcome.invalid:
        raise kopf.PermanentError(f"invalid spec: {outcome.invalid}")
    if outcome is not None:
        logger.info("reconciled: %s", outcome.status.adapter_summary or "no adapters")


@kopf.timer(GROUP, VERSION, "modelservers", interval=MS_RESYNC_SECONDS, initial_delay=MS_RESYNC_SECONDS)
def modelserver_resync(namespace: str | None, name: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """Level-triggered safety net: re-read everything (router restarts, replica restarts, missed events)."""
    if namespace and name:
        _ms_reconcile(namespace, name, memo, kwargs, apply=True)


def _finished_job(status: kopf.Status, type: str | None, **_: Any) -> bool:
    """A FineTuneJob event that can change what a ModelServer resolves: finished, or deleted."""
    if type is None:  # the initial listing: the ModelServers' own resume pass covers start-up
        return False
    if type == "DELETED":
        return True
    return any(
        c.get("type") in (Type.SUCCEEDED, Type.FAILED) and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


@kopf.on.event(GROUP, VERSION, "finetunejobs", when=_finished_job)
def finetunejob_settled_for_modelservers(namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A FineTuneJob finished (or went away): the ModelServers that may serve it re-resolve (promotion)."""
    index = kwargs.get(MS_SOURCES)
    if not namespace or index is None or namespace not in index:
        return
    for ms_namespace, ms_name in sorted(set(index[namespace])):
        _ms_reconcile(ms_namespace, ms_name, memo, kwargs, apply=True)


@kopf.on.event("", "v1", "pods", labels={LABEL_SERVER: kopf.PRESENT, builders.LABEL_COMPONENT: "vllm"})
def modelserver_pod_changed(
    namespace: str | None, labels: kopf.Labels, type: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    """A vLLM pod changed (ready, gone, endpoint): the route's replica list follows."""
    name = labels.get(LABEL_SERVER)
    if type is None or not namespace or not name:
        return
    _ms_reconcile(namespace, name, memo, kwargs, apply=False)


@kopf.on.delete(GROUP, VERSION, "modelservers", retries=5, backoff=3)
def modelserver_deleted(
    namespace: str | None, name: str | None, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Remove the server's route from the router (children go by garbage collection)."""
    if not namespace or not name:
        return
    try:
        removed = ms_reconcile.forget(namespace, name, _settings(memo))
    except RouterError as exc:
        raise kopf.TemporaryError(f"router: {exc}", delay=3) from exc
    logger.info("route %s removed from the router: %s", ms_reconcile.router_key(namespace, name), removed)
