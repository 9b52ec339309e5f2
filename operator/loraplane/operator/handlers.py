"""kopf entry points: thin, each unpacks kopf's arguments and calls one pure function."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf

from loraplane.api.common import GROUP, VERSION
from loraplane.api.conditions import ConditionType
from loraplane.api.modelserver import ModelServerSpec
from loraplane.operator import builders, kube, metrics
from loraplane.operator import modelserver_reconcile as ms_reconcile
from loraplane.operator import reconcile as reconcile_mod
from loraplane.operator.modelserver_builders import LABEL_SERVER
from loraplane.operator.modelserver_resolve import Claim, name_claims, source_namespaces
from loraplane.operator.router_client import RouterError
from loraplane.operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

SETTINGS_KEY = "loraplane_settings"
KOPF_SETTINGS_KEY = "kopf_settings"


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


# ---------------------------------------------------------------------------------------------- FineTuneJob
#
# Plain watch-event handlers: kopf keeps no state on FineTuneJobs. Its create/update handlers record what
# they handled in an annotation and its timers hold a finalizer on every matching object: two writes
# (plus retries on conflict) per object that the status already makes unnecessary. observedGeneration
# says whether a spec has been handled, a failed round is retried here, and the finalizer is ours, only
# where deletion has work to do (retentionPolicy Delete). bench/operator_scale.py: a third fewer
# FineTuneJob writes, p99 from creation to Job 2.4-3.1 s -> 1.2-1.6 s (docs/benchmarks.md). Missed
# events need no timer: kopf re-lists after a broken watch, and a restart lists everything (type None).

RETRY_MAX_S = 60.0


async def _in_executor(memo: kopf.Memo, fn: Callable[[], Any]) -> Any:
    """Run blocking API work in the threads kopf runs synchronous handlers in, with kopf's context
    (kopf.event() finds its queue through context variables)."""
    context = contextvars.copy_context()
    executor = memo[KOPF_SETTINGS_KEY].execution.executor
    return await asyncio.get_running_loop().run_in_executor(executor, context.run, fn)


async def _until_done(memo: kopf.Memo, what: str, first: Callable[[], Any], again: Callable[[], Any]) -> None:
    """Run `first`; until an attempt succeeds, `again` with backoff (1 s doubling to RETRY_MAX_S), or after
    the delay a NotYet asks for."""
    attempt, delay = first, 1.0
    while True:
        try:
            await _in_executor(memo, attempt)
            return
        except reconcile_mod.NotYet as waiting:
            logger.info("%s: %s", what, waiting)
            await asyncio.sleep(waiting.delay)
        except Exception:
            logger.exception("%s failed; retrying in %.0f s", what, delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, RETRY_MAX_S)
        attempt = again


@kopf.on.event(GROUP, VERSION, "finetunejobs")
async def finetunejob_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Admission and reconcile in one (an invalid spec ends in a Failed status); deletion releases our
    finalizer once the adapter is gone (retentionPolicy Delete)."""
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace"), meta.get("name")
    if not namespace or not name:
        return
    if type == "DELETED":
        reconcile_mod.forget(namespace, name)  # children go by garbage collection (owner references)
        return
    settings = _settings(memo)
    if meta.get("deletionTimestamp"):
        finalize = functools.partial(reconcile_mod.finalize, namespace, name, settings)
        await _until_done(memo, f"finalizing {namespace}/{name}", finalize, finalize)
    elif reconcile_mod.wants_round(type, body):
        # A create event's body serves the first round as it is (see reconcile); every other round reads fresh.
        ref = {"metadata": {"namespace": namespace, "name": name, "uid": meta.get("uid")}}
        fresh = functools.partial(reconcile_mod.reconcile, ref, settings, _post_event)
        first = functools.partial(reconcile_mod.reconcile, body, settings, _post_event) if type == "ADDED" else fresh
        await _until_done(memo, f"reconciling {namespace}/{name}", first, fresh)


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
    await _until_done(memo, f"reconciling {namespace}/{name}", round_, round_)


@kopf.on.event("batch", "v1", "jobs", labels={builders.LABEL_JOB: kopf.PRESENT})
async def training_job_changed(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    await _owner_changed(namespace, labels, memo)


@kopf.on.event("", "v1", "pods", labels={builders.LABEL_JOB: kopf.PRESENT})
async def training_pod_changed(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    await _owner_changed(namespace, labels, memo)


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
        c.get("type") in (ConditionType.SUCCEEDED, ConditionType.FAILED) and c.get("status") == "True"
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
