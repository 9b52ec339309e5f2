"""kopf entry points: the decorators, each a one-line call into the runtime (:mod:`.runtime`).

Both kinds take the same path: plain watch-event handlers → coalesced, level-triggered rounds → our own
finalizer where deletion has work to do. kopf keeps no state on our objects: no create/update/resume
handlers (they record a diffbase annotation), no timers or daemons (they hold kopf's finalizer on every
object); the periodic ModelServer resync is a requeue the round asks the runtime for. Missed events
need no timer either: kopf lists everything again after a broken watch or a restart (event type None).

The triggers of a round, per kind:
* FineTuneJob: its own events; its Job's and Pods' events, debounced (CHILD_EVENT_DELAY_S: a pod goes
  through several changes within a second, and a run's Job and Pods change together).
* ModelServer: its own events; its vLLM pods' events; a FineTuneJob it may serve finishing (promotion
  by selector, found through a kopf index); the requeues its rounds ask for (rollout, resync).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any, cast

import kopf

from loraplane.api.common import GROUP, VERSION
from loraplane.api.conditions import ConditionType
from loraplane.api.modelserver import ModelServerSpec
from loraplane.operator import kube, metrics, peering
from loraplane.operator.finetunejob.reconcile import FineTuneJobController
from loraplane.operator.modelserver.reconcile import ModelServerController
from loraplane.operator.modelserver.resolve import Claim, name_claims, source_namespaces
from loraplane.operator.names import LABEL_COMPONENT, LABEL_FINETUNEJOB, LABEL_MODELSERVER
from loraplane.operator.runtime import Runtime
from loraplane.operator.settings import OperatorSettings

logger = logging.getLogger(__name__)

SETTINGS_KEY = "loraplane_settings"
RUNTIME_KEY = "loraplane_runtime"
FINETUNEJOBS_KEY = "loraplane_finetunejobs"
MODELSERVERS_KEY = "loraplane_modelservers"
MS_PUBLIC_NAMES = "modelserver_public_names"
MS_SOURCES = "modelserver_sources"
CHILD_EVENT_DELAY_S = 1.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """The one place kopf is configured (peering, posting, timeouts) and the controllers are built."""
    cfg: OperatorSettings = memo.get(SETTINGS_KEY) or OperatorSettings()
    memo[SETTINGS_KEY] = cfg
    # Runs before kopf's watchers and peering start: make sure the peering object exists.
    namespaces: list[str | None] = [*cfg.namespaces] or [None]
    for namespace in namespaces:
        kube.ensure_peering(cfg.peering_name, namespace)
    # No handler of ours needs kopf's finalizer: kopf removes this one from objects of earlier versions.
    settings.persistence.finalizer = cfg.finalizer
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
    # Rounds are synchronous and wait on the API server: more threads, not more CPU.
    settings.execution.max_workers = cfg.max_workers
    memo[RUNTIME_KEY] = Runtime(lambda: settings.execution.executor, active=lambda: peering.acting(cfg))
    memo[FINETUNEJOBS_KEY] = FineTuneJobController(cfg, _post_event)
    names_index = kwargs[MS_PUBLIC_NAMES]  # kopf keeps it current; a round reads a copy taken per trigger
    memo[MODELSERVERS_KEY] = ModelServerController(cfg, _post_event, claims=lambda: _claims(names_index))
    metrics.serve(cfg.metrics_port, cfg.liveness_host)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    """Cancel pending follow-ups (on the event loop: timers and tasks are not thread-safe)."""
    if RUNTIME_KEY in memo:
        _runtime(memo).close()


def _post_event(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    """An Event on a FineTuneJob or ModelServer through kopf's poster (it fills in the involved object)."""
    kopf.event(cast(kopf.Body, obj), type=type_, reason=reason, message=message)


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime: Runtime = memo[RUNTIME_KEY]
    return runtime


def _claims(index: Mapping[str, Any]) -> dict[str, list[Claim]]:
    return {str(key): list(index[key]) for key in index}


# ---------------------------------------------------------------------------------------------- FineTuneJob


@kopf.on.event(GROUP, VERSION, "finetunejobs")
async def finetunejob_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _runtime(memo).event(memo[FINETUNEJOBS_KEY], type, body)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_FINETUNEJOB: kopf.PRESENT})
@kopf.on.event("", "v1", "pods", labels={LABEL_FINETUNEJOB: kopf.PRESENT})
async def training_child_changed(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **_: Any) -> None:
    """A Job or Pod of a training run changed: its FineTuneJob's round after a short delay (debounce)."""
    if namespace and (name := labels.get(LABEL_FINETUNEJOB)):
        _runtime(memo).later(memo[FINETUNEJOBS_KEY], namespace, name, CHILD_EVENT_DELAY_S, apply=False)


# ---------------------------------------------------------------------------------------------- ModelServer


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


@kopf.on.event(GROUP, VERSION, "modelservers")
async def modelserver_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _runtime(memo).event(memo[MODELSERVERS_KEY], type, body)


@kopf.on.event("", "v1", "pods", labels={LABEL_MODELSERVER: kopf.PRESENT, LABEL_COMPONENT: "vllm"})
async def modelserver_pod_changed(
    namespace: str | None, labels: kopf.Labels, type: str | None, memo: kopf.Memo, **_: Any
) -> None:
    """A vLLM pod changed (ready, gone, endpoint): the route's replica list follows."""
    if type is not None and namespace and (name := labels.get(LABEL_MODELSERVER)):
        await _runtime(memo).reconcile(memo[MODELSERVERS_KEY], namespace, name, apply=False)


def _finished_job(status: kopf.Status, type: str | None, **_: Any) -> bool:
    """A FineTuneJob event that can change what a ModelServer resolves: finished, or deleted."""
    if type is None:  # the initial listing: the ModelServers' own listing covers start-up
        return False
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    return type == "DELETED" or any(
        c.get("type") in (ConditionType.SUCCEEDED, ConditionType.FAILED) and c.get("status") == "True"
        for c in conditions
    )


@kopf.on.event(GROUP, VERSION, "finetunejobs", when=_finished_job)
async def finetunejob_settled_for_modelservers(namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A FineTuneJob finished (or went away): the ModelServers that may serve it re-resolve (promotion)."""
    index = kwargs.get(MS_SOURCES)
    if namespace and index is not None and namespace in index:
        for ms_namespace, ms_name in sorted(set(index[namespace])):
            _runtime(memo).later(memo[MODELSERVERS_KEY], ms_namespace, ms_name, 0.0, apply=True)
