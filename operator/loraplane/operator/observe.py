"""What the operator observed about one FineTuneJob's children, and the pure mapping to its status."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from loraplane.api.common import Condition, ConditionStatus
from loraplane.api.exit_codes import ExitCode
from loraplane.api.finetunejob import AdapterArtifact, EvaluationResult, FineTuneJobStatus, Phase, Progress
from loraplane.api.lora_rules import Problem
from loraplane.operator.builders import CONTAINER, PROGRESS_ANNOTATION
from loraplane.operator.conditions import Reason, Type, get_condition, set_condition
from loraplane.operator.status import admission_conditions

MAX_MESSAGE = 1024

EXIT_REASONS: dict[int, str] = {
    int(ExitCode.UNEXPECTED): Reason.UNEXPECTED,
    int(ExitCode.INVALID_SPEC): Reason.INVALID_SPEC,
    int(ExitCode.INVALID_DATA): Reason.DATA_ERROR,
    int(ExitCode.MODEL_NOT_FOUND): Reason.MODEL_NOT_FOUND,
    int(ExitCode.REVISION_NOT_FOUND): Reason.REVISION_NOT_FOUND,
    int(ExitCode.AUTH_FAILED): Reason.AUTH_FAILED,
    int(ExitCode.NETWORK_UNAVAILABLE): Reason.NETWORK_UNAVAILABLE,
    int(ExitCode.REMOTE_CODE_REFUSED): Reason.REMOTE_CODE_REFUSED,
    int(ExitCode.OUT_OF_MEMORY): Reason.OUT_OF_MEMORY,
    int(ExitCode.INTERRUPTED): Reason.INTERRUPTED,
}
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
    summary: dict[str, Any] | None = None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


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


def parse_summary(message: str | None) -> dict[str, Any] | None:
    """The trainer's termination-message summary (JSON), or None when absent or not ours."""
    if not message:
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _by_age(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"].get("name", "")))


def pod_failure(pod: dict[str, Any]) -> tuple[str, str]:
    """Reason and message of a failed pod: eviction/preemption, OOM kill, or the trainer's exit code."""
    status = pod.get("status") or {}
    disruption = _pod_condition(pod, "DisruptionTarget")
    if disruption and disruption.get("status") == "True":
        why = disruption.get("reason") or ""
        reason = Reason.PREEMPTED if "Preempt" in why else Reason.EVICTED
        return reason, _short(disruption.get("message") or f"pod {pod['metadata']['name']} was disrupted ({why})")
    if status.get("reason") == "Evicted":
        return Reason.EVICTED, _short(status.get("message") or "pod evicted")
    term = _terminated(pod) or {}
    code = int(term.get("exitCode", 0) or 0)
    summary = parse_summary(term.get("message"))
    if term.get("reason") == "OOMKilled" or code == ExitCode.OUT_OF_MEMORY:
        text = (summary or {}).get(
            "message"
        ) or "the trainer ran out of memory: raise spec.resources.memory or lower spec.training.batchSize"
        return Reason.OUT_OF_MEMORY, _short(str(text))
    reason = EXIT_REASONS.get(code, Reason.UNEXPECTED)
    text = (summary or {}).get("message") or term.get("message") or f"trainer exited with code {code}"
    return reason, _short(f"exit code {code}: {text}")


def verdict(snap: Snapshot) -> Verdict:
    """The pure heart of the controller: children's state → phase and explaining condition."""
    job = snap.job
    pods = _by_age(snap.pods)
    if job is None:
        return Verdict("Pending", ("False", Reason.JOB_CREATING, "creating the training Job"))
    complete = _job_condition(job, "Complete")
    failed = _job_condition(job, "Failed")
    if complete:
        done = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
        summary = parse_summary((_terminated(done[-1]) or {}).get("message")) if done else None
        if summary is None or not summary.get("ok") or not summary.get("adapter"):
            msg = "the training Job completed but its pod left no result summary in its termination message"
            return Verdict("Failed", ("False", Reason.RESULT_MISSING, msg), (Type.FAILED, Reason.RESULT_MISSING, msg))
        sha = str(summary["adapter"].get("sha256", ""))
        return Verdict(
            "Succeeded",
            ("False", Reason.COMPLETED, "training finished"),
            (Type.SUCCEEDED, Reason.SUCCEEDED, f"adapter {snap.adapter_uri} sha256 {sha[:12]}"),
            summary,
        )
    if failed:
        why = failed.get("reason") or ""
        failed_pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
        if why == "DeadlineExceeded":
            msg = _short(failed.get("message") or "the training Job ran longer than activeDeadlineSeconds")
            return Verdict(
                "Failed", ("False", Reason.DEADLINE_EXCEEDED, msg), (Type.FAILED, Reason.DEADLINE_EXCEEDED, msg)
            )
        if failed_pods:
            reason, msg = pod_failure(failed_pods[-1])
        else:
            reason, msg = Reason.JOB_FAILED, _short(failed.get("message") or why or "the training Job failed")
        if why == "BackoffLimitExceeded":
            msg = _short(f"{msg} (retries exhausted)")
        return Verdict("Failed", ("False", reason, msg), (Type.FAILED, reason, msg))
    if (job.get("spec") or {}).get("suspend"):
        if snap.suspend:
            return Verdict("Pending", ("False", Reason.SUSPENDED, "spec.suspend is true: the training Job is paused"))
        return Verdict("Pending", ("False", Reason.QUEUED, "waiting for the queue (Kueue) to admit the training Job"))
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
                "Evaluating", ("True", Reason.FINISHING, "the trainer exited 0; waiting for the Job to complete")
            )
        if earlier_failures:
            reason, msg = pod_failure(earlier_failures[-1])
            return Verdict("Pending", ("False", reason, _short(f"{msg}; waiting for a replacement pod")))
        return Verdict("Pending", ("False", Reason.PENDING, "waiting for the training pod to be created"))
    pod = live[-1]
    phase = (pod.get("status") or {}).get("phase")
    waiting = (_container(pod).get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in IMAGE_PULL_REASONS:
        msg = _short(f"cannot pull the trainer image: {waiting.get('message') or waiting.get('reason')}")
        return Verdict("Pending", ("False", Reason.IMAGE_PULL_FAILED, msg))
    if phase == "Pending":
        scheduled = _pod_condition(pod, "PodScheduled")
        if scheduled and scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
            msg = _short(f"no node can run the training pod: {scheduled.get('message', '')}")
            return Verdict("Pending", ("False", Reason.UNSCHEDULABLE, msg))
        return Verdict("Pending", ("False", Reason.PENDING, _short("the training pod is starting" + retry_note)))
    progress = parse_progress(pod)
    stage = STAGES.get(str((progress or {}).get("stage", "")).lower())
    if stage is None:
        stage = "Training" if progress and progress.get("step") else "Downloading"
    return Verdict(stage, ("True", stage, _short(f"pod {pod['metadata']['name']} is {stage.lower()}" + retry_note)))


def parse_progress(pod: dict[str, Any]) -> dict[str, Any] | None:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(PROGRESS_ANNOTATION)
    data = parse_summary(raw)
    return data


def progress_of(pods: list[dict[str, Any]]) -> Progress | None:
    """The latest progress any pod of the run reported (pod annotation loraplane.io/progress)."""
    best: dict[str, Any] | None = None
    for pod in _by_age(pods):
        rec = parse_progress(pod)
        if rec is not None:
            best = rec
    if best is None:
        return None
    try:
        step, total = int(best.get("step") or 0), int(best.get("total") or 0)
        pct = f" ({100 * step // total}%)" if total else ""
        return Progress(
            step=max(step, 0),
            total_steps=max(total, 0),
            epoch=float(best.get("epoch") or 0.0),
            loss=float(best["loss"]) if best.get("loss") is not None else None,
            learning_rate=float(best["learning_rate"]) if best.get("learning_rate") is not None else None,
            tokens_per_second=float(best["tokens_per_second"]) if best.get("tokens_per_second") is not None else None,
            eta_seconds=max(int(best["eta_seconds"]), 0) if best.get("eta_seconds") is not None else None,
            summary=f"{step}/{total}{pct}"[:64],
        )
    except (TypeError, ValueError):
        return None


def _results(
    summary: dict[str, Any], adapter_uri: str, base_model: str
) -> tuple[AdapterArtifact, EvaluationResult | None]:
    ad = summary.get("adapter") or {}
    adapter = AdapterArtifact(
        uri=adapter_uri,
        sha256=str(ad.get("sha256", ""))[:64],
        size_bytes=int(ad.get("size_bytes") or 0),
        trainable_params=int(summary.get("trainable_params") or 0),
        base_model=base_model.split("@", 1)[0],
        base_model_revision=base_model.split("@", 1)[1] if "@" in base_model else "",
    )
    ev = summary.get("evaluation")
    evaluation = None
    if isinstance(ev, dict) and "base_score" in ev and "adapter_score" in ev:
        evaluation = EvaluationResult(
            metric=str(ev.get("metric", "")),
            base_score=float(ev["base_score"]),
            adapter_score=float(ev["adapter_score"]),
            base_loss=float(ev["base_loss"]) if ev.get("base_loss") is not None else None,
            adapter_loss=float(ev["adapter_loss"]) if ev.get("adapter_loss") is not None else None,
            passed=bool(ev.get("passed", True)),
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
    for type_ in (Type.SUCCEEDED, Type.FAILED):
        cond = get_condition(current.conditions, type_)
        if cond is not None and cond.status == "True" and snap.job is None:
            return current.model_copy(update={"conditions": conds, "observed_generation": snap.generation})
    v = verdict(snap)
    gen = snap.generation
    conds = set_condition(conds, Type.RUNNING, v.running[0], v.running[1], v.running[2], gen, timestamp)
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
        other = Type.FAILED if type_ == Type.SUCCEEDED else Type.SUCCEEDED
        conds = set_condition(conds, type_, "True", reason, message, gen, timestamp)
        conds = set_condition(conds, other, "False", reason, message, gen, timestamp)
        update["completion_time"] = current.completion_time or timestamp
        if v.summary is not None:
            adapter, evaluation = _results(v.summary, snap.adapter_uri, snap.base_model)
            update["adapter"], update["evaluation"] = adapter, evaluation
            passed = evaluation.passed if evaluation else True
            conds = set_condition(
                conds,
                Type.EVALUATION_PASSED,
                "True" if passed else "False",
                Reason.GATE_PASSED if passed else Reason.GATE_FAILED,
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
