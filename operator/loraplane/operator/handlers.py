"""kopf entry points: thin, each unpacks kopf's arguments and calls one pure function."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from loraplane.api.common import GROUP, VERSION
from loraplane.api.lora_rules import Problem
from loraplane.operator import kube
from loraplane.operator import status as status_fns
from loraplane.operator.conditions import Reason, Type, now
from loraplane.operator.settings import OperatorSettings
from loraplane.operator.validation import finetunejob_problems, modelserver_problems

SETTINGS_KEY = "loraplane_settings"


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


@kopf.on.resume(GROUP, VERSION, "finetunejobs")
@kopf.on.create(GROUP, VERSION, "finetunejobs")
@kopf.on.update(GROUP, VERSION, "finetunejobs", field="spec")
def finetunejob_admission(
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
        problems_of=finetunejob_problems,
        status_of=status_fns.finetunejob_admission_status,
    )


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
