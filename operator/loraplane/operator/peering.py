"""Whether this replica acts or stands by, read from kopf's peering objects (mirrors kopf's own rule).

kopf pauses a replica while another live one has a higher priority, or the same one (both pause). It
stops that replica's watch streams, but not the follow-up rounds :mod:`loraplane.operator.runtime`
schedules itself; those ask `acting` first. Invariant: the answer uses only the peering objects' status
(peer -> priority, lifetime, lastseen) and the clock, like kopf; `standing_by` is the pure rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from loraplane.operator import kube
from loraplane.operator.settings import OperatorSettings


def _live(peer: Mapping[str, Any], now: datetime) -> bool:
    try:
        lastseen = datetime.fromisoformat(str(peer["lastseen"]))
        lifetime = timedelta(seconds=int(peer.get("lifetime", 60)))
    except (KeyError, TypeError, ValueError):
        return False
    return lastseen + lifetime > now


def standing_by(status: Mapping[str, Any], priority: int, now: datetime) -> bool:
    """True when a live peer outranks `priority`, or another one shares it (this replica is one of those).

    Peers are identified by kopf's identity, which this operator does not know: a replica counts itself
    among the live peers of its own priority once it has announced itself (kopf does so before acting).
    """
    priorities = [int(p.get("priority", 0)) for p in status.values() if isinstance(p, Mapping) and _live(p, now)]
    return any(p > priority for p in priorities) or priorities.count(priority) > 1


def acting(settings: OperatorSettings) -> bool:
    """Whether this replica acts: no peering object (one per watched namespace, or the cluster's) says wait."""
    namespaces: list[str | None] = [*settings.namespaces] or [None]
    for namespace in namespaces:
        obj = kube.peering(settings.peering_name, namespace)
        if obj is not None and standing_by(obj.get("status") or {}, settings.priority, datetime.now(UTC)):
            return False
    return True
