"""Deleting a ModelServer: its route leaves the router first, then our finalizer goes.

Invariant: while the finalizer is held the router may hold the server's route; once it is released the
route is gone — unless the router stayed unreachable for ROUTE_REMOVAL_PATIENCE_S after the deletion
began: then the finalizer is released anyway, with a Warning Event, so a dead router cannot block
`kubectl delete` forever (kopf's deletion handler of earlier versions gave up after its retries, too).
Children go by garbage collection (owner references).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from loraplane.api.conditions import ServerReason
from loraplane.operator import finalizers
from loraplane.operator.modelserver.builders import served_model_name
from loraplane.operator.names import FINALIZER_ROUTE
from loraplane.operator.router_client import RouterError, router_for
from loraplane.operator.runtime import NotYet
from loraplane.operator.settings import OperatorSettings
from loraplane.operator.status import EventPoster

logger = logging.getLogger(__name__)

ROUTE_REMOVAL_PATIENCE_S = 15.0
ROUTER_RETRY_S = 3.0


def deleting_for(meta: Mapping[str, Any], now: datetime) -> float:
    """Seconds since the deletion began (0 when the timestamp cannot be read)."""
    try:
        began = datetime.fromisoformat(str(meta["deletionTimestamp"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return 0.0
    return (now - began).total_seconds()


def finalize(obj: Mapping[str, Any], settings: OperatorSettings, post_event: EventPoster) -> None:
    """Remove the route, then release our finalizer. Raises NotYet while the router cannot be reached."""
    if not finalizers.holds(obj, FINALIZER_ROUTE):
        return
    meta = obj["metadata"]
    key = served_model_name(str(meta["namespace"]), str(meta["name"]))
    router = router_for(settings)
    if router is not None:
        try:
            removed = router.delete(key)
        except RouterError as exc:
            if deleting_for(meta, datetime.now(UTC)) < ROUTE_REMOVAL_PATIENCE_S:
                raise NotYet(f"removing route {key}: {exc}", delay=ROUTER_RETRY_S) from exc
            message = f"the router still holds route {key}: {exc}"
            logger.warning("%s; deleting the ModelServer anyway", message)
            post_event(obj, "Warning", ServerReason.ROUTE_NOT_REMOVED, message)
        else:
            logger.info("route %s removed from the router: %s", key, removed)
    finalizers.hold(obj, FINALIZER_ROUTE, held=False)
