"""Our finalizers: on an object exactly while its deletion has work to do for us.

FineTuneJobs with retentionPolicy Delete hold FINALIZER_ADAPTER (the adapter goes first), ModelServers
with a router hold FINALIZER_ROUTE (their route goes first). kopf's own finalizer is not used: kopf
removes it from objects of earlier versions by itself, since no handler of ours asks for it.

Invariant: every write here is conditional on the resourceVersion the round read; a stale view fails
with 409 and the runtime re-rounds at once, so nobody else's finalizer is ever dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loraplane.operator import kube
from loraplane.operator.names import ANNOTATION_KOPF_DIFFBASE


def holds(obj: Mapping[str, Any], finalizer: str) -> bool:
    return finalizer in (obj["metadata"].get("finalizers") or [])


def hold(obj: Mapping[str, Any], finalizer: str, *, held: bool) -> None:
    """Add or remove `finalizer` so that it is there exactly when `held`.

    The same write drops the annotation kopf's create/update handlers of earlier versions left behind.
    """
    meta = obj["metadata"]
    current = list(meta.get("finalizers") or [])
    desired = [f for f in current if f != finalizer] + ([finalizer] if held else [])
    change: dict[str, Any] = {}
    if desired != current:
        change["finalizers"] = desired
    if ANNOTATION_KOPF_DIFFBASE in (meta.get("annotations") or {}):
        change["annotations"] = {ANNOTATION_KOPF_DIFFBASE: None}
    if change:
        patch = {"metadata": {**change, "resourceVersion": meta["resourceVersion"]}}
        kube.merge_patch(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"], patch)
