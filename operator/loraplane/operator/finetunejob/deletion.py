"""Deleting a FineTuneJob: with retentionPolicy Delete the adapter goes first, then our finalizer.

Invariant: the finalizer is released only once the adapter is gone (a claim the operator created goes
by garbage collection with the FineTuneJob; on an existing claim a cleanup Job removes the run's
directory); with Retain, deletion has no work and holds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loraplane.api.finetunejob import FineTuneJobSpec
from loraplane.operator import finalizers, kube
from loraplane.operator.finetunejob import builders
from loraplane.operator.names import FINALIZER_ADAPTER
from loraplane.operator.owner import Owner
from loraplane.operator.runtime import NotYet
from loraplane.operator.settings import OperatorSettings

CLEANUP_POLL_S = 3.0


def finalize(obj: Mapping[str, Any], settings: OperatorSettings) -> None:
    """Release our finalizer once the adapter is gone.

    Raises NotYet while the cleanup Job runs, RuntimeError when it failed (the directory is left).
    """
    if not finalizers.holds(obj, FINALIZER_ADAPTER):
        return
    if (obj.get("spec") or {}).get("retentionPolicy") == "Delete":
        waiting = delete_artifact(obj, settings)
        if waiting:
            raise NotYet(waiting, delay=CLEANUP_POLL_S)
    finalizers.hold(obj, FINALIZER_ADAPTER, held=False)


def delete_artifact(body: Mapping[str, Any], settings: OperatorSettings) -> str | None:
    """retentionPolicy Delete: make the adapter go away. None when done, else what is still awaited."""
    spec = FineTuneJobSpec.model_validate(body["spec"])
    if not spec.output.storage_claim:
        return None  # the operator's own claim: owned by the FineTuneJob, garbage collection removes it
    job = kube.apply(builders.cleanup_job(Owner.of(body), spec, settings), settings.field_manager)
    conditions = {c.get("type"): c.get("status") for c in (job.get("status") or {}).get("conditions") or []}
    if conditions.get("Complete") == "True":
        return None
    if conditions.get("Failed") == "True":
        raise RuntimeError(f"cleanup Job {job['metadata']['name']} failed; the adapter directory is left in place")
    return f"waiting for cleanup Job {job['metadata']['name']}"
