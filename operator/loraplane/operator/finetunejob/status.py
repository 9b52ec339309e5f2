"""What the operator observed about one FineTuneJob's children, and the pure mapping to its status.

Invariant: the status is a function of the snapshot (and of the status it replaces, for what must
survive the Job: a finished run keeps its result after the Job's TTL). `verdict` decides the phase and
the condition that explains it; `finetunejob_status` writes them with the progress and the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loraplane.api.common import Condition
from loraplane.api.conditions import (
    ConditionType,
    JobReason,
    exit_reason,
    get_condition,
    is_true,
    set_condition,
    short,
)
from loraplane.api.exit_codes import ExitCode
from loraplane.api.finetunejob import AdapterArtifact, EvaluationResult, FineTuneJobStatus, Phase, Progress
from loraplane.api.lora_rules import Problem
from loraplane.api.result import PROGRESS_ANNOTATION, ProgressRecord, ResultSummary
from loraplane.operator.admission import admission_conditions
from loraplane.operator.finetunejob.builders import CONTAINER
from loraplane.operator.status import Explanation

IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
STAGES: dict[str, Phase] = {"downloading": "Downloading", "training": "Training", "evaluating": "Evaluating"}


@dataclass(frozen=True)
class Snapshot:
    """Everything the status is computed from (all of it read from the API server)."""

    generation: int
    problems: list[Problem]
    suspend: bool
    adapter_uri: str
    job: dict[str, Any] | None
    base_model: str = ""
    pods: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    """Phase plus the Running condition that explains it, and how the run ended once it has."""

    phase: Phase
    running: Explanation
    final: Condition | None = None  # Succeeded=True or Failed=True, once the run has ended
    summary: ResultSummary | None = None


def finished(conditions: Sequence[Condition]) -> bool:
    """The run ended (Succeeded or Failed). An invalid spec is not an ended run: fixed, it starts."""
    failed = get_condition(conditions, ConditionType.FAILED)
    ran_and_failed = failed is not None and failed.status == "True" and failed.reason != JobReason.INVALID_SPEC
    return is_true(conditions, ConditionType.SUCCEEDED) or ran_and_failed


# ----------------------------------------------------------------------------------------------- pods and Job


def _job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def _pod_condition(pod: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def _container(pod: dict[str, Any]) -> dict[str, Any]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            return dict(cs)
    return {}


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    state = _container(pod).get("state") or {}
    term = state.get("terminated")
    return dict(term) if term else None


def _phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def _by_age(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"].get("name", "")))


def pod_failure(pod: dict[str, Any]) -> tuple[str, str]:
    """Reason and message of a failed pod: eviction/preemption, OOM kill, or the trainer's exit code."""
    status = pod.get("status") or {}
    disruption = _pod_condition(pod, "DisruptionTarget")
    if disruption and disruption.get("status") == "True":
        why = disruption.get("reason") or ""
        reason = JobReason.PREEMPTED if "Preempt" in why else JobReason.EVICTED
        return reason, short(disruption.get("message") or f"pod {pod['metadata']['name']} was disrupted ({why})")
    if status.get("reason") == "Evicted":
        return JobReason.EVICTED, short(status.get("message") or "pod evicted")
    term = _terminated(pod) or {}
    code = int(term.get("exitCode", 0) or 0)
    summary = ResultSummary.parse(term.get("message"))
    said = summary.message if summary else ""
    if term.get("reason") == "OOMKilled" or code == ExitCode.OUT_OF_MEMORY:
        text = said or "the trainer ran out of memory: raise spec.resources.memory or lower spec.training.batchSize"
        return JobReason.OUT_OF_MEMORY, short(text)
    reason = exit_reason(code)
    text = said or term.get("message") or f"trainer exited with code {code}"
    return reason, short(f"exit code {code}: {text}")


# ----------------------------------------------------------------------------------------------- the verdict


def _pending(reason: str, message: str) -> Verdict:
    return Verdict("Pending", Explanation("False", reason, message))


def _ended(type_: str, reason: str, message: str) -> Condition:
    return Condition(type=type_, status="True", reason=reason, message=message)


def _failed(reason: str, message: str) -> Verdict:
    return Verdict("Failed", Explanation("False", reason, message), _ended(ConditionType.FAILED, reason, message))


def _completed(snap: Snapshot, pods: list[dict[str, Any]]) -> Verdict:
    """The Job completed: success when the last pod left a result summary with an adapter."""
    done = [p for p in pods if _phase(p) == "Succeeded"]
    summary = ResultSummary.parse((_terminated(done[-1]) or {}).get("message")) if done else None
    if summary is None or not summary.ok or summary.adapter is None:
        msg = "the training Job completed but its pod left no result summary in its termination message"
        return _failed(JobReason.RESULT_MISSING, msg)
    sha = summary.adapter.sha256
    message = f"adapter {snap.adapter_uri} sha256 {sha[:12]}"
    return Verdict(
        "Succeeded",
        Explanation("False", JobReason.COMPLETED, "training finished"),
        _ended(ConditionType.SUCCEEDED, JobReason.SUCCEEDED, message),
        summary,
    )


def _job_failed(failed: dict[str, Any], pods: list[dict[str, Any]]) -> Verdict:
    """The Job failed: the deadline, else the last failed pod's reason (retries exhausted or not)."""
    why = failed.get("reason") or ""
    if why == "DeadlineExceeded":
        msg = short(failed.get("message") or "the training Job ran longer than activeDeadlineSeconds")
        return _failed(JobReason.DEADLINE_EXCEEDED, msg)
    failed_pods = [p for p in pods if _phase(p) == "Failed"]
    if failed_pods:
        reason, msg = pod_failure(failed_pods[-1])
    else:
        reason, msg = JobReason.JOB_FAILED, short(failed.get("message") or why or "the training Job failed")
    if why == "BackoffLimitExceeded":
        msg = short(f"{msg} (retries exhausted)")
    return _failed(reason, msg)


def _live_pod(pod: dict[str, Any], retry_note: str) -> Verdict:
    """A pod of the run is Pending or Running: image pull, scheduling, or the stage it reports."""
    waiting = (_container(pod).get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in IMAGE_PULL_REASONS:
        msg = short(f"cannot pull the trainer image: {waiting.get('message') or waiting.get('reason')}")
        return _pending(JobReason.IMAGE_PULL_FAILED, msg)
    if _phase(pod) == "Pending":
        scheduled = _pod_condition(pod, "PodScheduled")
        if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            msg = short(f"no node can run the training pod: {scheduled.get('message', '')}")
            return _pending(JobReason.UNSCHEDULABLE, msg)
        return _pending(JobReason.PENDING, short("the training pod is starting" + retry_note))
    progress = parse_progress(pod)
    stage = STAGES.get(progress.stage or "") if progress else None
    if stage is None:
        stage = "Training" if progress and progress.step else "Downloading"
    message = short(f"pod {pod['metadata']['name']} is {stage.lower()}" + retry_note)
    return Verdict(stage, Explanation("True", stage, message))


def _between_pods(pods: list[dict[str, Any]], failures: list[dict[str, Any]]) -> Verdict:
    """No pod of the run is live: the trainer exited 0, a failed pod awaits its replacement, or none yet."""
    if any(_phase(p) == "Succeeded" for p in pods):
        return Verdict(
            "Evaluating",
            Explanation("True", JobReason.FINISHING, "the trainer exited 0; waiting for the Job to complete"),
        )
    if failures:
        reason, msg = pod_failure(failures[-1])
        return _pending(reason, short(f"{msg}; waiting for a replacement pod"))
    return _pending(JobReason.PENDING, "waiting for the training pod to be created")


def verdict(snap: Snapshot) -> Verdict:
    """The pure heart of the controller: children's state → phase and explaining condition."""
    job = snap.job
    pods = _by_age(snap.pods)
    if job is None:
        return _pending(JobReason.JOB_CREATING, "creating the training Job")
    if _job_condition(job, "Complete"):
        return _completed(snap, pods)
    failed = _job_condition(job, "Failed")
    if failed:
        return _job_failed(failed, pods)
    if (job.get("spec") or {}).get("suspend"):
        if snap.suspend:
            return _pending(JobReason.SUSPENDED, "spec.suspend is true: the training Job is paused")
        return _pending(JobReason.QUEUED, "waiting for the queue (Kueue) to admit the training Job")
    live = [p for p in pods if _phase(p) in ("Pending", "Running") and not p["metadata"].get("deletionTimestamp")]
    failures = [p for p in pods if _phase(p) == "Failed"]
    if not live:
        return _between_pods(pods, failures)
    retry_note = ""
    if failures:
        reason, msg = pod_failure(failures[-1])
        retry_note = f" (retrying after {reason}: {msg})"
    return _live_pod(live[-1], retry_note)


# ----------------------------------------------------------------------------------------------- status


def parse_progress(pod: dict[str, Any]) -> ProgressRecord | None:
    """The progress record the trainer left on its pod (annotation loraplane.io/progress), if any."""
    return ProgressRecord.parse(((pod.get("metadata") or {}).get("annotations") or {}).get(PROGRESS_ANNOTATION))


def progress_of(pods: list[dict[str, Any]]) -> Progress | None:
    """The latest progress any pod of the run reported."""
    records = [r for r in map(parse_progress, _by_age(pods)) if r is not None]
    if not records:
        return None
    best = records[-1]
    step, total = max(best.step, 0), max(best.total, 0)
    pct = f" ({100 * step // total}%)" if total else ""
    return Progress(
        step=step,
        total_steps=total,
        epoch=best.epoch,
        loss=best.loss,
        learning_rate=best.learning_rate,
        tokens_per_second=best.tokens_per_second,
        eta_seconds=max(best.eta_seconds, 0) if best.eta_seconds is not None else None,
        summary=f"{step}/{total}{pct}"[:64],
    )


def _results(
    summary: ResultSummary, adapter_uri: str, base_model: str
) -> tuple[AdapterArtifact, EvaluationResult | None]:
    assert summary.adapter is not None
    revision = base_model.split("@", 1)[1] if "@" in base_model else ""
    adapter = AdapterArtifact(
        uri=adapter_uri,
        sha256=summary.adapter.sha256[:64],
        size_bytes=summary.adapter.size_bytes,
        trainable_params=summary.trainable_params or 0,
        base_model=base_model.split("@", 1)[0],
        base_model_revision=revision,
        oci_uri=summary.oci_uri,
        digest=summary.oci_uri.rsplit("@", 1)[1] if summary.oci_uri and "@" in summary.oci_uri else None,
        s3_uri=summary.s3_uri,
    )
    ev = summary.evaluation
    evaluation = None
    if ev is not None:
        evaluation = EvaluationResult(
            metric=ev.metric,
            base_score=ev.base_score,
            adapter_score=ev.adapter_score,
            base_loss=ev.base_loss,
            adapter_loss=ev.adapter_loss,
            passed=ev.passed,
        )
    return adapter, evaluation


def _first_time(pods: list[dict[str, Any]], key: str) -> str | None:
    times = [str((p.get("status") or {}).get(key)) for p in pods if (p.get("status") or {}).get(key)]
    return min(times) if times else None


def _gate_message(ev: EvaluationResult | None) -> str:
    if ev is None:
        return "no evaluation gate"
    verb = "passed" if ev.passed else "failed"
    return f"{ev.metric}: base {ev.base_score:.4f}, adapter {ev.adapter_score:.4f}; gate {verb}"


def _end_of_run(
    current: FineTuneJobStatus, v: Verdict, final: Condition, snap: Snapshot, conds: list[Condition], timestamp: str
) -> tuple[list[Condition], dict[str, Any]]:
    """Conditions and fields of a run that just ended: Succeeded/Failed, completion time, the result."""
    gen = snap.generation
    other = ConditionType.FAILED if final.type == ConditionType.SUCCEEDED else ConditionType.SUCCEEDED
    conds = set_condition(conds, final.type, "True", final.reason, final.message, gen, timestamp)
    conds = set_condition(conds, other, "False", final.reason, final.message, gen, timestamp)
    update: dict[str, Any] = {"completion_time": current.completion_time or timestamp}
    if v.summary is not None:
        adapter, evaluation = _results(v.summary, snap.adapter_uri, snap.base_model)
        update["adapter"], update["evaluation"] = adapter, evaluation
        passed = evaluation.passed if evaluation else True
        conds = set_condition(
            conds,
            ConditionType.EVALUATION_PASSED,
            "True" if passed else "False",
            JobReason.GATE_PASSED if passed else JobReason.GATE_FAILED,
            _gate_message(evaluation),
            gen,
            timestamp,
        )
    return conds, update


def finetunejob_status(current: FineTuneJobStatus, snap: Snapshot, timestamp: str) -> FineTuneJobStatus:
    """Status from the snapshot (pure). A finished run keeps its result even after the Job is gone (TTL).

    A successful round also drops a Degraded condition a failed round left (see loraplane.operator.runtime).
    """
    gen = snap.generation
    kept = [c for c in current.conditions if c.type != ConditionType.DEGRADED]
    conds: list[Condition] = admission_conditions(kept, gen, snap.problems, timestamp)
    if snap.problems:
        return current.model_copy(update={"conditions": conds, "phase": "Failed", "observed_generation": gen})
    if finished(current.conditions) and snap.job is None:
        return current.model_copy(update={"conditions": conds, "observed_generation": gen})
    v = verdict(snap)
    conds = set_condition(
        conds, ConditionType.RUNNING, v.running.status, v.running.reason, v.running.message, gen, timestamp
    )
    update: dict[str, Any] = {
        "phase": v.phase,
        "observed_generation": gen,
        "job_name": (snap.job or {}).get("metadata", {}).get("name"),
    }
    progress = progress_of(snap.pods)
    if progress is not None:
        update["progress"] = progress
    started = _first_time(snap.pods, "startTime")
    if started:
        update["start_time"] = current.start_time or started
    if v.final is not None:
        conds, ended = _end_of_run(current, v, v.final, snap, conds, timestamp)
        update.update(ended)
    return current.model_copy(update={"conditions": conds, **update})


def transition_event(old: FineTuneJobStatus, new: FineTuneJobStatus) -> tuple[str, str, str] | None:
    """The Event a status change deserves (one per transition of phase or explaining reason)."""
    for type_ in (ConditionType.FAILED, ConditionType.SUCCEEDED):
        before, after = get_condition(old.conditions, type_), get_condition(new.conditions, type_)
        if after is not None and after.status == "True" and (before is None or before.status != "True"):
            return ("Warning" if type_ == ConditionType.FAILED else "Normal", after.reason, after.message)
    before, after = (
        get_condition(old.conditions, ConditionType.RUNNING),
        get_condition(new.conditions, ConditionType.RUNNING),
    )
    if after is not None and (old.phase != new.phase or before is None or before.reason != after.reason):
        quiet = (JobReason.PENDING, JobReason.JOB_CREATING, JobReason.SUSPENDED, JobReason.QUEUED)
        warning = after.status == "False" and after.reason not in quiet
        return ("Warning" if warning else "Normal", after.reason, f"{new.phase}: {after.message}")
    return None
