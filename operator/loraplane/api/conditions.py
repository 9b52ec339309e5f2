"""Conditions of both kinds: types, reasons, the trainer's exit code -> reason map, and the pure helpers.

One home for every word a condition or an Event carries: the operator writes them, local mode and the
trainer report them, tests and the Argo CD health checks read them. Reasons are CamelCase constants.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from loraplane.api.common import Condition, ConditionStatus
from loraplane.api.exit_codes import ExitCode

MAX_MESSAGE = 1024  # characters of a condition or Event message


class ConditionType:
    """Condition types (adjectives or past tense, as in Kubernetes API conventions)."""

    ACCEPTED = "Accepted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    EVALUATION_PASSED = "EvaluationPassed"
    FAILED = "Failed"
    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


class JobReason:
    """Reasons of the FineTuneJob conditions (and of the trainer's result)."""

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
    PUSH_FAILED = "PushFailed"
    GATE_PASSED = "GatePassed"
    GATE_FAILED = "GateFailed"
    RECONCILE_FAILED = "ReconcileFailed"


class ServerReason:
    """Reasons of the ModelServer conditions."""

    INVALID_SPEC = JobReason.INVALID_SPEC
    SPEC_VALID = JobReason.SPEC_VALID
    SERVING = "Serving"
    SCALED_TO_ZERO = "ScaledToZero"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    ROLLING_OUT = "RollingOut"
    LOADING_ADAPTERS = "LoadingAdapters"
    ADAPTERS_NOT_SERVED = "AdaptersNotServed"
    CONVERGED = "Converged"
    ROUTER_NOT_CONFIGURED = "RouterNotConfigured"
    ROUTER_UNAVAILABLE = "RouterUnavailable"
    ROUTER_REJECTED = "RouterRejected"
    ADAPTER_LOAD_FAILED = "AdapterLoadFailed"
    POD_FAILING = "PodFailing"
    UNSCHEDULABLE = JobReason.UNSCHEDULABLE
    DEPLOYMENT_STALLED = "ProgressDeadlineExceeded"
    HEALTHY = "Healthy"
    RECONCILE_FAILED = JobReason.RECONCILE_FAILED
    # reasons of Events only
    ADAPTER_PROMOTED = "AdapterPromoted"
    ADAPTER_SERVED = "AdapterServed"
    CANARY_STARTED = "CanaryStarted"
    ROUTE_NOT_REMOVED = "RouteNotRemoved"


class SourceReason:
    """Reasons a ModelServer adapter source cannot be resolved to a servable version."""

    NOT_FOUND = "FineTuneJobNotFound"
    RUNNING = "FineTuneJobNotFinished"
    FAILED = "FineTuneJobFailed"
    GATE_FAILED = "EvaluationGateFailed"
    NO_ADAPTER = "AdapterMissing"
    NO_MATCH = "NoMatchingFineTuneJob"
    NOTHING_PASSED = "NoPassingFineTuneJob"
    NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
    NAME_TAKEN = "PublicNameTaken"
    UNSUPPORTED_URI = "UnsupportedAdapterUri"
    INCOMPATIBLE = "IncompatibleAdapter"


# The trainer's exit code -> the reason the trainer reports and the operator writes into the condition.
EXIT_REASONS: dict[ExitCode, str] = {
    ExitCode.SUCCESS: JobReason.SUCCEEDED,
    ExitCode.UNEXPECTED: JobReason.UNEXPECTED,
    ExitCode.INVALID_SPEC: JobReason.INVALID_SPEC,
    ExitCode.INVALID_DATA: JobReason.DATA_ERROR,
    ExitCode.MODEL_NOT_FOUND: JobReason.MODEL_NOT_FOUND,
    ExitCode.REVISION_NOT_FOUND: JobReason.REVISION_NOT_FOUND,
    ExitCode.AUTH_FAILED: JobReason.AUTH_FAILED,
    ExitCode.NETWORK_UNAVAILABLE: JobReason.NETWORK_UNAVAILABLE,
    ExitCode.REMOTE_CODE_REFUSED: JobReason.REMOTE_CODE_REFUSED,
    ExitCode.OUT_OF_MEMORY: JobReason.OUT_OF_MEMORY,
    ExitCode.INTERRUPTED: JobReason.INTERRUPTED,
    ExitCode.PUSH_FAILED: JobReason.PUSH_FAILED,
}


def exit_reason(code: int) -> str:
    """The reason of a trainer exit code; Unexpected for a code outside the contract."""
    try:
        return EXIT_REASONS[ExitCode(code)]
    except ValueError:
        return JobReason.UNEXPECTED


def short(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` on one line and at most `limit` characters (an ellipsis marks a cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    current = get_condition(conditions, type_)
    moved = current is None or current.status != status or not current.last_transition_time
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=timestamp if moved or current is None else current.last_transition_time,
        observed_generation=generation,
    )
    if current is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of `type_`, if present."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    """Whether the condition of `type_` is present with status True."""
    cond = get_condition(conditions, type_)
    return cond is not None and cond.status == "True"
