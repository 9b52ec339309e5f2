"""What the operator observed about one FineTuneJob's children, and the pure mapping to its status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loraplane.api.common import Condition, ConditionStatus
from loraplane.api.conditions import ConditionType, JobReason, exit_reason, get_condition, set_condition, short
from loraplane.api.exit_codes import ExitCode
from loraplane.api.finetunejob import AdapterArtifact, EvaluationResult, FineTuneJobStatus, Phase, Progress
from loraplane.api.lora_rules import Problem
from loraplane.api.result import PROGRESS_ANNOTATION, ProgressRecord, ResultSummary
from loraplane.operator.builders import CONTAINER
from loraplane.operator.status import admission_conditions

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
    """Phase plus the condition that explains it."""

    phase: Phase
    running: tuple[ConditionStatus, str, str]  # status, reason, message
    final: tuple[str, str, str] | None = None  # Succeeded/Failed type, reason, message
    summary: ResultSummary | None = None


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


def verdict(snap: Snapshot) -> Verdict:
    """The pure heart of the controller: children's state → phase and explaining condition."""
    job = snap.job
    pods = _by_age(snap.pods)
    if job is None:
        return Verdict("Pending", ("False", JobReason.JOB_CREATING, "creating the training Job"))
    complete = _job_condition(job, "Complete")
    failed = _job_condition(job, "Failed")
    if complete:
        done = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
        summary = ResultSummary.parse((_terminated(done[-1]) or {}).get("message")) if done else None
        if summary is None or not summary.ok or summary.adapter is None:
            msg = "the training Job completed but its pod left no result summary in its termination message"
            return Verdict(
                "Failed",
                ("False", JobReason.RESULT_MISSING, msg),
                (ConditionType.FAILED, JobReason.RESULT_MISSING, msg),
            )
        sha = summary.adapter.sha256
        return Verdict(
            "Succeeded",
            ("False", JobReason.COMPLETED, "training finished"),
            (ConditionType.SUCCEEDED, JobReason.SUCCEEDED, f"adapter {snap.adapter_uri} sha256 {sha[:12]}"),
            summary,
        )
    if failed:
        why = failed.get("reason") or ""
        failed_pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
        if why == "DeadlineExceeded":
            msg = short(failed.get("message") or "the training Job ran longer than activeDeadlineSeconds")
            return Verdict(
                "Failed",
                ("False", JobReason.DEADLINE_EXCEEDED, msg),
                (ConditionType.FAILED, JobReason.DEADLINE_EXCEEDED, msg),
            )
        if failed_pods:
            reason, msg = pod_failure(failed_pods[-1])
        else:
            reason, msg = JobReason.JOB_FAILED, short(failed.get("message") or why or "the training Job failed")
        if why == "BackoffLimitExceeded":
            msg = short(f"{msg} (retries exhausted)")
        return Verdict("Failed", ("False", reason, msg), (ConditionType.FAILED, reason, msg))
    if (job.get("spec") or {}).get("suspend"):
        if snap.suspend:
            return Verdict(
                "Pending", ("False", JobReason.SUSPENDED, "spec.suspend is true: the training Job is paused")
            )
        return Verdict(
            "Pending", ("False", JobReason.QUEUED, "waiting for the queue (Kueue) to admit the training Job")
        )
    live = [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") in ("Pending", "Running") and not p["metadata"].get("deletionTimestamp")
    ]
    earlier_failures = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
    retry_note = ""
    if earlier_failures:
        reason, msg = pod_failure(earlier_failures[-1])
        retry_note = f" (retrying after {reason}: {msg})"
    if not live:
        if any((p.get("status") or {}).get("phase") == "Succeeded" for p in pods):
            return Verdict(
                "Evaluating", ("True", JobReason.FINISHING, "the trainer exited 0; waiting for the Job to complete")
            )
        if earlier_failures:
            reason, msg = pod_failure(earlier_failures[-1])
            return Verdict("Pending", ("False", reason, short(f"{msg}; waiting for a replacement pod")))
        return Verdict("Pending", ("False", JobReason.PENDING, "waiting for the training pod to be created"))
    pod = live[-1]
    phase = (pod.get("status") or {}).get("phase")
    waiting = (_container(pod).get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in IMAGE_PULL_REASONS:
        msg = short(f"cannot pull the trainer image: {waiting.get('message') or waiting.get('reason')}")
        return Verdict("Pending", ("False", JobReason.IMAGE_PULL_FAILED, msg))
    if phase == "Pending":
        scheduled = _pod_condition(pod, "PodScheduled")
        if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            msg = short(f"no node can run the training pod: {scheduled.get('message', '')}")
            return Verdict("Pending", ("False", JobReason.UNSCHEDULABLE, msg))
        return Verdict("Pending", ("False", JobReason.PENDING, short("the training pod is starting" + retry_note)))
    progress = parse_progress(pod)
    stage = STAGES.get(progress.stage or "") if progress else None
    if stage is None:
        stage = "Training" if progress and progress.step else "Downloading"
    return Verdict(stage, ("True", stage, short(f"pod {pod['metadata']['name']} is {stage.lower()}" + retry_note)))


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


def finetunejob_status(current: FineTuneJobStatus, snap: Snapshot, timestamp: str) -> FineTuneJobStatus:
    """Status from the snapshot (pure). A finished run keeps its result even after the Job is gone (TTL)."""
    conds: list[Condition] = admission_conditions(current.conditions, snap.generation, snap.problems, timestamp)
    if snap.problems:
        return current.model_copy(
            update={"conditions": conds, "phase": "Failed", "observed_generation": snap.generation}
        )
    for type_ in (ConditionType.SUCCEEDED, ConditionType.FAILED):
        cond = get_condition(current.conditions, type_)
        if cond is not None and cond.status == "True" and snap.job is None:
            return current.model_copy(update={"conditions": conds, "observed_generation": snap.generation})
    v = verdict(snap)
    gen = snap.generation
    conds = set_condition(conds, ConditionType.RUNNING, v.running[0], v.running[1], v.running[2], gen, timestamp)
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
        type_, reason, message = v.final
        other = ConditionType.FAILED if type_ == ConditionType.SUCCEEDED else ConditionType.SUCCEEDED
        conds = set_condition(conds, type_, "True", reason, message, gen, timestamp)
        conds = set_condition(conds, other, "False", reason, message, gen, timestamp)
        update["completion_time"] = current.completion_time or timestamp
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
    return current.model_copy(update={"conditions": conds, **update})


def _gate_message(ev: EvaluationResult | None) -> str:
    if ev is None:
        return "no evaluation gate"
    verb = "passed" if ev.passed else "failed"
    return f"{ev.metric}: base {ev.base_score:.4f}, adapter {ev.adapter_score:.4f}; gate {verb}"
