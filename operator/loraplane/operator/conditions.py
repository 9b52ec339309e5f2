"""Condition types, reasons, and the pure `set_condition` that maintains a condition list."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from loraplane.api.common import Condition, ConditionStatus


class Type:
    """Condition types (adjectives or past tense, as in Kubernetes API conventions)."""

    ACCEPTED = "Accepted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    EVALUATION_PASSED = "EvaluationPassed"
    FAILED = "Failed"
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


class Reason:
    """CamelCase reasons, in one place."""

    SPEC_VALID = "SpecValid"
    INVALID_SPEC = "InvalidSpec"
    PENDING = "Pending"
    JOB_CREATING = "JobCreating"
    SUSPENDED = "Suspended"
    QUEUED = "Queued"
    UNSCHEDULABLE = "Unschedulable"
    IMAGE_PULL_FAILED = "ImagePullFailed"
    COMPLETED = "Completed"
    FINISHING = "Finishing"
    SUCCEEDED = "Succeeded"
    RESULT_MISSING = "ResultMissing"
    JOB_FAILED = "JobFailed"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    EVICTED = "Evicted"
    PREEMPTED = "Preempted"
    OUT_OF_MEMORY = "OutOfMemory"
    UNEXPECTED = "Unexpected"
    DATA_ERROR = "DataError"
    MODEL_NOT_FOUND = "ModelNotFound"
    REVISION_NOT_FOUND = "RevisionNotFound"
    AUTH_FAILED = "AuthFailed"
    NETWORK_UNAVAILABLE = "NetworkUnavailable"
    REMOTE_CODE_REFUSED = "RemoteCodeRefused"
    INTERRUPTED = "Interrupted"
    GATE_PASSED = "GatePassed"
    GATE_FAILED = "GateFailed"


def now() -> str:
    """An RFC 3339 timestamp with second precision, as Kubernetes writes them."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    timestamp: str,
) -> list[Condition]:
    """Return a new list with the condition of `type_` set.

    `lastTransitionTime` moves only when `status` flips; reason, message and observedGeneration follow
    the latest observation. The order of the other conditions is kept.
    """
    result: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type_:
            result.append(cond)
            continue
        found = True
        changed = cond.status != status
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=timestamp
                if changed or not cond.last_transition_time
                else cond.last_transition_time,
                observed_generation=generation,
            )
        )
    if not found:
        result.append(
            Condition(
                type=type_,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=timestamp,
                observed_generation=generation,
            )
        )
    return result


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of `type_`, if present."""
    return next((c for c in conditions if c.type == type_), None)
