"""Status writes both controllers share: only what changed, and the mark of a failing reconcile.

Invariants: a round that finds the status already right writes nothing (`status_patch` returns None);
a reconcile that keeps failing shows Degraded=True with reason ReconcileFailed and the error in its
message (`kubectl describe`), and the next good round's status replaces it (ModelServer: Degraded is
recomputed; FineTuneJob: it is dropped).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from loraplane.api.common import Condition, ConditionStatus
from loraplane.api.conditions import ConditionType, JobReason, now, set_condition, short
from loraplane.api.finetunejob import FineTuneJobStatus
from loraplane.api.modelserver import ModelServerStatus
from loraplane.operator import kube

# post_event(object, type, reason, message): a Normal or Warning Event on a FineTuneJob or ModelServer.
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]


@dataclass(frozen=True)
class Explanation:
    """The status, reason and message of one condition, as a status mapping decides it."""

    status: ConditionStatus
    reason: str
    message: str


def status_patch(
    current: dict[str, Any] | None, desired: FineTuneJobStatus | ModelServerStatus
) -> dict[str, Any] | None:
    """The merge patch that turns `current` into `desired`, or None when nothing changes."""
    wanted = desired.to_k8s()
    have = current or {}
    patch = {k: v for k, v in wanted.items() if have.get(k) != v}
    return patch or None


def reconcile_failed(
    status: Mapping[str, Any], message: str, generation: int | None, timestamp: str
) -> dict[str, Any] | None:
    """The status patch that marks a failing reconcile (Degraded=True, ReconcileFailed), or None if marked."""
    conditions = [Condition.model_validate(c) for c in status.get("conditions") or []]
    marked = set_condition(
        conditions, ConditionType.DEGRADED, "True", JobReason.RECONCILE_FAILED, short(message), generation, timestamp
    )
    if marked == conditions:
        return None
    return {"conditions": [c.to_k8s() for c in marked]}


def report_reconcile_failed(api_version: str, kind: str, namespace: str, name: str, message: str) -> None:
    """Write the ReconcileFailed mark on the object (if it still exists)."""
    obj = kube.get(api_version, kind, namespace, name)
    if obj is None:
        return
    generation = obj["metadata"].get("generation")
    patch = reconcile_failed(obj.get("status") or {}, message, generation, now())
    if patch is not None:
        kube.patch_status(api_version, kind, namespace, name, patch)
