"""The pure snapshot → status mapping, one case per reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loraplane.api.conditions import exit_reason, get_condition
from loraplane.api.exit_codes import PERMANENT, ExitCode
from loraplane.api.finetunejob import FineTuneJobStatus
from loraplane.api.lora_rules import Problem
from loraplane.operator.finetunejob.status import Snapshot, finetunejob_status, verdict

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def job(*conditions: tuple[str, str], suspend: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": "x-train", "uid": "j"},
        "spec": {"suspend": suspend},
        "status": {
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": f"{r} happened"} for t, r in conditions
            ]
        },
    }


def pod(
    name: str = "x-train-a",
    phase: str = "Running",
    *,
    created: str = T0,
    exit_code: int | None = None,
    reason: str | None = None,
    message: str | None = None,
    annotations: dict[str, str] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    waiting: dict[str, str] | None = None,
) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}}
    if exit_code is not None:
        term: dict[str, Any] = {"exitCode": exit_code, "reason": reason or ("Completed" if exit_code == 0 else "Error")}
        if message is not None:
            term["message"] = message
        state = {"terminated": term}
    if waiting:
        state = {"waiting": waiting}
    return {
        "metadata": {"name": name, "creationTimestamp": created, "annotations": annotations or {}},
        "status": {
            "phase": phase,
            "startTime": created,
            "conditions": conditions or [],
            "containerStatuses": [{"name": "trainer", "state": state}],
        },
    }


def pod_condition(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def snap(
    j: dict[str, Any] | None, *pods: dict[str, Any], suspend: bool = False, problems: list[Problem] | None = None
) -> Snapshot:
    return Snapshot(
        generation=2,
        problems=problems or [],
        suspend=suspend,
        adapter_uri="pvc://store/ns/x",
        job=j,
        pods=list(pods),
        base_model="hf://o/m@rev",
    )


SUMMARY = {
    "ok": True,
    "code": 0,
    "reason": "Succeeded",
    "adapter": {"path": "/mnt/pvc/store/ns/x", "sha256": "ab" * 32, "size_bytes": 9000},
    "evaluation": {"metric": "Contains", "base_score": 0.2, "adapter_score": 0.6, "passed": True},
    "metrics": {"train_loss": 1.1},
    "trainable_params": 4096,
}


def test_success_takes_the_result_from_the_termination_message() -> None:
    s = snap(job(("Complete", "CompletionsReached")), pod(phase="Succeeded", exit_code=0, message=json.dumps(SUMMARY)))
    status = finetunejob_status(FineTuneJobStatus(), s, T1)
    assert status.phase == "Succeeded"
    assert status.adapter is not None
    assert status.adapter.sha256 == "ab" * 32 and status.adapter.trainable_params == 4096
    assert status.adapter.uri == "pvc://store/ns/x" and status.adapter.base_model_revision == "rev"
    assert status.evaluation is not None and status.evaluation.adapter_score == 0.6
    succeeded = get_condition(status.conditions, "Succeeded")
    assert succeeded is not None and succeeded.status == "True" and succeeded.observed_generation == 2
    gate = get_condition(status.conditions, "EvaluationPassed")
    assert gate is not None and (gate.status, gate.reason) == ("True", "GatePassed")
    assert status.completion_time == T1


def test_the_pushed_artifact_and_its_digest_reach_the_status() -> None:
    digest = "sha256:" + "cd" * 32
    summary = {**SUMMARY, "oci_uri": f"oci://registry.example.com/adapters/x:x@{digest}"}
    s = snap(job(("Complete", "CompletionsReached")), pod(phase="Succeeded", exit_code=0, message=json.dumps(summary)))
    status = finetunejob_status(FineTuneJobStatus(), s, T1)
    assert status.adapter is not None and status.adapter.digest == digest
    assert status.adapter.oci_uri == summary["oci_uri"] and status.adapter.uri == "pvc://store/ns/x"
    wire = status.adapter.to_k8s()
    assert wire["ociUri"] == summary["oci_uri"] and wire["digest"] == digest
    plain = finetunejob_status(
        FineTuneJobStatus(),
        snap(job(("Complete", "CompletionsReached")), pod(phase="Succeeded", exit_code=0, message=json.dumps(SUMMARY))),
        T1,
    )
    assert plain.adapter is not None and "digest" not in plain.adapter.to_k8s()


def test_push_failed_is_retried_and_named() -> None:
    assert exit_reason(19) == "PushFailed" and ExitCode.PUSH_FAILED not in PERMANENT


def test_failed_gate_is_success_with_evaluation_passed_false() -> None:
    summary = {**SUMMARY, "evaluation": {**SUMMARY["evaluation"], "passed": False}}  # type: ignore[dict-item]
    s = snap(job(("Complete", "CompletionsReached")), pod(phase="Succeeded", exit_code=0, message=json.dumps(summary)))
    status = finetunejob_status(FineTuneJobStatus(), s, T1)
    gate = get_condition(status.conditions, "EvaluationPassed")
    assert status.phase == "Succeeded" and gate is not None and (gate.status, gate.reason) == ("False", "GateFailed")


def test_complete_without_a_summary_is_a_failure() -> None:
    s = snap(job(("Complete", "CompletionsReached")), pod(phase="Succeeded", exit_code=0))
    status = finetunejob_status(FineTuneJobStatus(), s, T1)
    failed = get_condition(status.conditions, "Failed")
    assert status.phase == "Failed" and failed is not None and failed.reason == "ResultMissing"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (1, "Unexpected"),
        (10, "InvalidSpec"),
        (11, "DataError"),
        (12, "ModelNotFound"),
        (13, "RevisionNotFound"),
        (14, "AuthFailed"),
        (15, "NetworkUnavailable"),
        (16, "RemoteCodeRefused"),
        (17, "OutOfMemory"),
    ],
)
def test_each_exit_code_has_its_reason(code: int, reason: str) -> None:
    message = json.dumps({"ok": False, "code": code, "reason": reason, "message": f"field x: problem {code}"})
    s = snap(job(("Failed", "PodFailurePolicy")), pod(phase="Failed", exit_code=code, message=message))
    status = finetunejob_status(FineTuneJobStatus(), s, T1)
    failed = get_condition(status.conditions, "Failed")
    assert status.phase == "Failed"
    assert failed is not None and failed.reason == reason
    assert f"problem {code}" in failed.message


def test_oom_killed_by_the_kernel() -> None:
    s = snap(job(("Failed", "PodFailurePolicy")), pod(phase="Failed", exit_code=137, reason="OOMKilled"))
    failed = get_condition(finetunejob_status(FineTuneJobStatus(), s, T1).conditions, "Failed")
    assert failed is not None and failed.reason == "OutOfMemory" and "resources.memory" in failed.message


def test_deadline_exceeded() -> None:
    s = snap(job(("Failed", "DeadlineExceeded")), pod(phase="Failed", exit_code=143))
    failed = get_condition(finetunejob_status(FineTuneJobStatus(), s, T1).conditions, "Failed")
    assert failed is not None and failed.reason == "DeadlineExceeded"


def test_backoff_exhausted_names_the_last_exit() -> None:
    s = snap(job(("Failed", "BackoffLimitExceeded")), pod(phase="Failed", exit_code=15))
    failed = get_condition(finetunejob_status(FineTuneJobStatus(), s, T1).conditions, "Failed")
    assert failed is not None and failed.reason == "NetworkUnavailable" and "retries exhausted" in failed.message


def test_unschedulable_and_image_pull() -> None:
    unschedulable = pod_condition("PodScheduled", "False", "Unschedulable", "0/3 nodes: Insufficient nvidia.com/gpu")
    unsched = pod(phase="Pending", conditions=[unschedulable])
    v = verdict(snap(job(), unsched))
    assert (v.phase, v.running.reason) == ("Pending", "Unschedulable") and "nvidia.com/gpu" in v.running.message
    pull = pod(phase="Pending", waiting={"reason": "ImagePullBackOff", "message": "pull access denied"})
    v = verdict(snap(job(), pull))
    assert (v.phase, v.running.reason) == ("Pending", "ImagePullFailed") and "pull access denied" in v.running.message


def test_preempted_pod_is_retried_not_failed() -> None:
    preempted = pod_condition("DisruptionTarget", "True", "PreemptionByScheduler", "preempted by p")
    gone = pod("x-train-a", "Failed", exit_code=143, conditions=[preempted])
    v = verdict(snap(job(), gone))
    assert (v.phase, v.running.reason, v.final) == ("Pending", "Preempted", None)
    v = verdict(snap(job(), gone, pod("x-train-b", created=T1)))
    assert v.phase == "Downloading" and "retrying after Preempted" in v.running.message


def test_stages_and_progress_from_the_pod_annotation() -> None:
    progress = {"stage": "training", "step": 30, "total": 120, "epoch": 0.5, "loss": 1.5, "eta_seconds": 60}
    s = snap(job(), pod(annotations={"loraplane.io/progress": json.dumps(progress)}))
    status = finetunejob_status(FineTuneJobStatus(), s, T1)
    assert status.phase == "Training"
    assert status.progress is not None and status.progress.summary == "30/120 (25%)" and status.progress.loss == 1.5
    evaluating = snap(
        job(), pod(annotations={"loraplane.io/progress": json.dumps({**progress, "stage": "evaluating"})})
    )
    assert verdict(evaluating).phase == "Evaluating"
    assert verdict(snap(job(), pod())).phase == "Downloading"
    assert verdict(snap(job(), pod(annotations={"loraplane.io/progress": "not json"}))).phase == "Downloading"


def test_suspended_and_queued() -> None:
    assert verdict(snap(job(suspend=True), suspend=True)).running.reason == "Suspended"
    assert verdict(snap(job(suspend=True), suspend=False)).running.reason == "Queued"


def test_invalid_spec() -> None:
    status = finetunejob_status(
        FineTuneJobStatus(), snap(None, problems=[Problem("spec.lora.useDora", "vLLM cannot serve DoRA")]), T1
    )
    failed = get_condition(status.conditions, "Failed")
    assert status.phase == "Failed" and failed is not None and failed.reason == "InvalidSpec"


def test_finished_status_survives_the_job_ttl() -> None:
    s = snap(job(("Complete", "CompletionsReached")), pod(phase="Succeeded", exit_code=0, message=json.dumps(SUMMARY)))
    done = finetunejob_status(FineTuneJobStatus(), s, T1)
    later = finetunejob_status(done, snap(None), "2026-01-09T00:00:00Z")
    assert later == done


def test_transition_time_moves_only_on_flip() -> None:
    first = finetunejob_status(FineTuneJobStatus(), snap(job(), pod()), T0)
    again = finetunejob_status(first, snap(job(), pod()), T1)
    assert again == first
