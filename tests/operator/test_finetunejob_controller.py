"""The FineTuneJob controller against the real control plane: Jobs on KWOK fake GPU nodes, every outcome."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kube import (
    Cluster,
    Kube,
    OperatorProcess,
    assert_applied_child_of,
    condition,
    ftj,
    no_room_for,
    poll,
    store_host_dir,
)

SUMMARY = {
    "ok": True,
    "code": 0,
    "reason": "Succeeded",
    "message": "",
    "adapter": {"path": "/mnt/pvc/store/x", "sha256": "c0ffee" * 10 + "abcd", "size_bytes": 123456},
    "evaluation": {"metric": "Contains", "base_score": 0.25, "adapter_score": 0.75, "passed": True},
    "metrics": {"train_loss": 0.9},
    "trainable_params": 921600,
}


def test_job_created_with_the_right_fields_and_pod_on_a_gpu_node(kube: Kube, operator: OperatorProcess) -> None:
    kube.c.apply(ftj("shape", resources={"gpus": 2, "memory": "8Gi"}), "-n", kube.ns)
    job = poll("the training Job", lambda: kube.maybe("job", "shape-train"))
    assert_applied_child_of(job, kube.get("ftj", "shape"))
    spec = job["spec"]
    assert spec["suspend"] is False and spec["backoffLimit"] == 3
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [10, 11, 12, 13, 14, 16, 17]
    assert rules[1]["action"] == "Ignore" and rules[1]["onExitCodes"]["values"] == [18]
    (container,) = spec["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    cm = kube.get("configmap", "shape-spec")
    assert json.loads(cm["data"]["spec.json"])["outputDir"] == f"/mnt/pvc/store/{kube.ns}/shape"
    pod = kube.running_pod("shape")
    assert pod["spec"]["nodeName"].startswith("kwok-gpu-")
    obj = kube.wait_ftj("shape", lambda o: o.get("status", {}).get("phase") == "Downloading", "phase Downloading")
    running = condition(obj, "Running")
    assert running and running["status"] == "True" and obj["status"]["jobName"] == "shape-train"
    assert any(e["reason"] == "Downloading" for e in kube.events("shape"))


def test_progress_then_success_with_the_adapter_from_the_termination_message(
    kube: Kube, operator: OperatorProcess
) -> None:
    kube.c.apply(ftj("good"), "-n", kube.ns)
    pod = kube.running_pod("good")["metadata"]["name"]
    progress = {"stage": "training", "step": 15, "total": 60, "epoch": 0.25, "loss": 2.5, "eta_seconds": 300}
    kube.c.kubectl("annotate", "pod", pod, "-n", kube.ns, f"loraplane.io/progress={json.dumps(progress)}")
    kube.wait_ftj("good", lambda o: (o["status"].get("progress") or {}).get("summary") == "15/60 (25%)", "progress")
    table = kube.c.kubectl("get", "ftj", "good", "-n", kube.ns).stdout
    assert "Training" in table and "15/60 (25%)" in table and "2.5" in table
    kube.finish_pod(pod, 0, json.dumps(SUMMARY))
    kube.c.kubectl("wait", "-n", kube.ns, "--for=condition=Succeeded", "--timeout=90s", "ftj/good")
    obj = kube.get("ftj", "good")
    assert obj["status"]["phase"] == "Succeeded"
    assert obj["status"]["adapter"]["sha256"] == SUMMARY["adapter"]["sha256"]  # type: ignore[index]
    assert obj["status"]["adapter"]["uri"] == f"pvc://store/{kube.ns}/good"
    assert obj["status"]["adapter"]["trainableParams"] == 921600
    assert obj["status"]["evaluation"] == {
        "metric": "Contains",
        "baseScore": 0.25,
        "adapterScore": 0.75,
        "passed": True,
    }
    gate = condition(obj, "EvaluationPassed")
    assert gate and gate["status"] == "True" and gate["reason"] == "GatePassed"
    assert obj["status"]["completionTime"] and obj["status"]["startTime"]
    reasons = [e["reason"] for e in kube.events("good")]
    assert "Training" in reasons and "Succeeded" in reasons


@pytest.mark.parametrize(
    ("code", "kubelet_reason", "reason", "text"),
    [
        (11, None, "DataError", "record 3 has no output field"),
        (12, None, "ModelNotFound", "hf://nobody/nothing not found"),
        (16, None, "RemoteCodeRefused", "set spec.baseModel.trustRemoteCode"),
        (17, "OOMKilled", "OutOfMemory", "lower spec.training.batchSize"),
        (10, None, "InvalidSpec", "spec.lora.r exceeds"),
    ],
)
def test_permanent_failures_fail_at_once_with_their_reason(
    kube: Kube, operator: OperatorProcess, code: int, kubelet_reason: str | None, reason: str, text: str
) -> None:
    name = f"fail-{code}"
    kube.c.apply(ftj(name), "-n", kube.ns)
    pod = kube.running_pod(name)["metadata"]["name"]
    message = json.dumps({"ok": False, "code": code, "reason": reason, "message": text})
    kube.finish_pod(pod, code, message, kubelet_reason)
    obj = kube.wait_ftj(name, lambda o: o["status"].get("phase") == "Failed", "phase Failed")
    failed = condition(obj, "Failed")
    assert failed and failed["status"] == "True" and failed["reason"] == reason and text in failed["message"]
    assert failed["observedGeneration"] == 1
    job = kube.get("job", f"{name}-train")
    assert any(c["type"] == "Failed" and c["reason"] == "PodFailurePolicy" for c in job["status"]["conditions"])
    assert len(kube.pods(name)) == 1, "a permanent error must not be retried"
    warning = poll("the Warning Event", lambda: [e for e in kube.events(name) if e["reason"] == reason])
    assert warning[0]["type"] == "Warning"


def test_interruptions_do_not_use_up_retries(kube: Kube, operator: OperatorProcess) -> None:
    kube.c.apply(ftj("preempted"), "-n", kube.ns)
    seen: set[str] = set()
    for _ in range(2):  # the Job controller backs off 10 s, 20 s, ... between pods: two are enough
        pod = kube.running_pod("preempted", exclude=seen)["metadata"]["name"]
        seen.add(pod)
        kube.finish_pod(pod, 18, json.dumps({"ok": False, "code": 18, "reason": "Interrupted", "message": "SIGTERM"}))
    kube.running_pod("preempted", exclude=seen)
    job = kube.get("job", "preempted-train")
    # Counted failures show in status.failed (see test_retryable_failure_then_success); ignored ones do not.
    assert not job["status"].get("failed"), "exit 18 counted against backoffLimit"
    assert not any(c["type"] == "Failed" for c in job["status"].get("conditions", []))
    obj = kube.wait_ftj(
        "preempted",
        lambda o: "retrying after Interrupted" in (condition(o, "Running") or {}).get("message", ""),
        "retry note",
    )
    assert obj["status"]["phase"] in ("Downloading", "Pending")


def test_retryable_failure_then_success(kube: Kube, operator: OperatorProcess) -> None:
    kube.c.apply(ftj("flaky"), "-n", kube.ns)
    first = kube.running_pod("flaky")["metadata"]["name"]
    kube.finish_pod(
        first, 15, json.dumps({"ok": False, "code": 15, "reason": "NetworkUnavailable", "message": "hub unreachable"})
    )
    second = kube.running_pod("flaky", exclude={first})["metadata"]["name"]
    kube.wait_ftj(
        "flaky", lambda o: "NetworkUnavailable" in (condition(o, "Running") or {}).get("message", ""), "retry note"
    )
    kube.finish_pod(second, 0, json.dumps(SUMMARY))
    kube.c.kubectl("wait", "-n", kube.ns, "--for=condition=Succeeded", "--timeout=90s", "ftj/flaky")
    assert kube.get("job", "flaky-train")["status"]["failed"] == 1


def test_suspend_and_resume(kube: Kube, operator: OperatorProcess) -> None:
    kube.c.apply(ftj("pause"), "-n", kube.ns)
    first = kube.running_pod("pause")["metadata"]["name"]
    kube.c.kubectl("patch", "ftj", "pause", "-n", kube.ns, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    obj = kube.wait_ftj("pause", lambda o: (condition(o, "Running") or {}).get("reason") == "Suspended", "Suspended")
    assert obj["status"]["phase"] == "Pending"
    poll("the Job suspended", lambda: kube.get("job", "pause-train")["spec"]["suspend"] is True)
    poll(
        "the pod gone",
        lambda: (
            not [
                p
                for p in kube.pods("pause")
                if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
            ]
        ),
    )
    kube.c.kubectl("patch", "ftj", "pause", "-n", kube.ns, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    kube.running_pod("pause", exclude={first})
    kube.wait_ftj("pause", lambda o: o["status"].get("phase") == "Downloading", "running again")


def test_unschedulable_when_no_node_has_enough_gpus(kube: Kube, operator: OperatorProcess) -> None:
    kube.c.apply(ftj("huge", resources={"gpus": 16}), "-n", kube.ns)
    obj = kube.wait_ftj(
        "huge", lambda o: (condition(o, "Running") or {}).get("reason") == "Unschedulable", "Unschedulable"
    )
    assert obj["status"]["phase"] == "Pending"
    assert "nvidia.com/gpu" in condition(obj, "Running")["message"]  # type: ignore[index]
    warning = poll("the Warning Event", lambda: [e for e in kube.events("huge") if e["reason"] == "Unschedulable"])
    assert warning[0]["type"] == "Warning"


def test_deadline_exceeded(kube: Kube, operator: OperatorProcess) -> None:
    kube.c.apply(ftj("slow", resources={"gpus": 1, "activeDeadlineSeconds": 3}), "-n", kube.ns)
    obj = kube.wait_ftj("slow", lambda o: o["status"].get("phase") == "Failed", "Failed", timeout=120)
    failed = condition(obj, "Failed")
    assert failed and failed["reason"] == "DeadlineExceeded"


def test_operator_killed_and_restarted_makes_no_duplicate_job(
    kube: Kube, installed: Cluster, operator: OperatorProcess
) -> None:
    kube.c.apply(ftj("survivor"), "-n", kube.ns)
    job = poll("the training Job", lambda: kube.maybe("job", "survivor-train"))
    operator.kill()
    kube.c.apply(ftj("orphan"), "-n", kube.ns)  # created while no operator runs
    operator.start()
    poll("the Job of the object created during the outage", lambda: kube.maybe("job", "orphan-train"), timeout=120)
    kube.wait_ftj("survivor", lambda o: o["status"].get("phase") == "Downloading", "converged")
    jobs = kube.get("jobs", "-l", "loraplane.io/finetunejob=survivor")["items"]
    assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]]
    running = [p for p in kube.pods("survivor") if p["status"].get("phase") in ("Pending", "Running")]
    assert len(running) == 1


def metric(text: str, name: str, **labels: str) -> float:
    """The samples `name` of a /metrics page with these labels (others any: summed); 0 when none is exposed.

    Sample values, not names: a metric's HELP and TYPE lines name it even when nothing was counted."""
    return math.fsum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_metrics_endpoint(kube: Kube, operator: OperatorProcess) -> None:
    kube.c.apply(ftj("metered"), "-n", kube.ns)
    kube.wait_ftj("metered", lambda o: o["status"].get("phase") == "Downloading", "Downloading")

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def downloading() -> str | None:
        text = scrape()
        return text if metric(text, "loraplane_finetunejobs", phase="Downloading") >= 1 else None

    text = poll("metrics: a FineTuneJob Downloading", downloading)
    assert metric(text, "loraplane_reconcile_duration_seconds_count") > 0
    errors = metric(text, "loraplane_reconcile_errors_total", kind="FineTuneJob")
    # A write the API server refuses (a quota that allows no Job) fails the round: the counter goes up.
    kube.c.apply(no_room_for("count/jobs.batch"), "-n", kube.ns)
    kube.c.apply(ftj("refused"), "-n", kube.ns)
    poll(
        "the failed reconcile counted in loraplane_reconcile_errors_total",
        lambda: metric(scrape(), "loraplane_reconcile_errors_total", kind="FineTuneJob") > errors,
    )


def test_deletion_keeps_the_adapter_by_default(kube: Kube, operator: OperatorProcess) -> None:
    kube.c.apply(ftj("kept"), "-n", kube.ns)
    kube.c.apply(ftj("kept-claim", output={}), "-n", kube.ns)  # the operator creates the adapter claim
    kube.running_pod("kept")
    poll("the created claim", lambda: kube.maybe("pvc", "kept-claim-adapter"))
    kube.finish_pod(kube.running_pod("kept")["metadata"]["name"], 0, json.dumps(SUMMARY))
    kube.c.kubectl("wait", "-n", kube.ns, "--for=condition=Succeeded", "--timeout=90s", "ftj/kept")
    poll("no finalizer on a finished Retain object", lambda: not kube.get("ftj", "kept")["metadata"].get("finalizers"))
    kube.c.kubectl("delete", "ftj", "kept", "kept-claim", "-n", kube.ns, "--wait=true", "--timeout=60s")
    assert kube.maybe("job", "kept-cleanup") is None
    claim = kube.maybe("pvc", "kept-claim-adapter")
    assert claim is not None and not claim["metadata"].get("deletionTimestamp"), "Retain: the adapter claim stays"
    poll("the training Job garbage-collected", lambda: kube.maybe("job", "kept-train") is None, timeout=120)


def test_deletion_with_retention_delete_removes_the_adapter_directory(kube: Kube, operator: OperatorProcess) -> None:
    """The cleanup Job's command, run as the kubelet would run it, removes the adapter's directory and only that."""
    store = store_host_dir(kube.ns)  # the `store` claim's volume on this host (a hostPath: the kube fixture)
    adapter, neighbour = store / kube.ns / "gone", store / kube.ns / "other"
    for directory in (adapter, neighbour):
        directory.mkdir(parents=True)
        (directory / "adapter_model.safetensors").write_bytes(b"weights")
    try:
        kube.c.apply(ftj("gone", retentionPolicy="Delete"), "-n", kube.ns)
        kube.running_pod("gone")
        poll("the finalizer", lambda: kube.get("ftj", "gone")["metadata"].get("finalizers"))
        kube.c.kubectl("delete", "ftj", "gone", "-n", kube.ns, "--wait=false")
        cleanup = poll("the cleanup Job", lambda: kube.maybe("job", "gone-cleanup"))
        pod = cleanup["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert f"/mnt/pvc/store/{kube.ns}/gone" in container["command"][-1]
        (volume,) = pod["volumes"]
        (mount,) = container["volumeMounts"]
        assert volume["persistentVolumeClaim"]["claimName"] == "store" and mount["name"] == volume["name"]
        # KWOK runs no container: run its command here, with the volume where the pod mounts it.
        command = [arg.replace(mount["mountPath"], str(store)) for arg in container["command"]]
        assert command[0] == "python", command
        subprocess.run([sys.executable, *command[1:]], check=True, timeout=60)
        assert not adapter.exists(), f"the cleanup command left {adapter}"
        assert (neighbour / "adapter_model.safetensors").exists(), "the cleanup removed more than the adapter"
        # KWOK completes the cleanup pod (exit 0); then the finalizer goes and the object with it.
        poll("the FineTuneJob deleted", lambda: kube.maybe("ftj", "gone") is None, timeout=120)
    finally:
        shutil.rmtree(store, ignore_errors=True)


def test_a_second_replica_stands_by(kube: Kube, operator: OperatorProcess, tmp_path: Path) -> None:
    standby = OperatorProcess(operator.kubeconfig, tmp_path / "standby.log", env={"LORAPLANE_OPERATOR_PRIORITY": "0"})
    standby.start()
    try:
        poll(
            "the standby (priority 0) in the peering object",
            lambda: any(
                peer.get("priority") == 0
                for peer in (kube.c.get("clusterkopfpeering", "loraplane").get("status") or {}).values()
            ),
            timeout=90,
        )
        kube.c.apply(ftj("single"), "-n", kube.ns)
        kube.running_pod("single")
        kube.wait_ftj("single", lambda o: o["status"].get("phase") == "Downloading", "Downloading")
        assert len(kube.get("jobs", "-l", "loraplane.io/finetunejob=single")["items"]) == 1
        assert "Handler 'finetunejob_changed'" not in standby.log(), "the standby replica acted"
        assert "Handler 'training_child_changed'" not in standby.log()
    finally:
        standby.stop()


def test_a_write_the_api_server_keeps_refusing_shows_in_kubectl_describe_and_clears(
    kube: Kube, operator: OperatorProcess
) -> None:
    """A persistent failure (a quota that allows no Job) is Degraded=True ReconcileFailed until a round succeeds."""
    kube.c.apply(no_room_for("count/jobs.batch"), "-n", kube.ns)
    kube.c.apply(ftj("refused"), "-n", kube.ns)
    kube.wait_ftj("refused", lambda o: (condition(o, "Degraded") or {}).get("reason") == "ReconcileFailed", "marked")
    described = kube.c.kubectl("describe", "ftj", "refused", "-n", kube.ns).stdout
    assert "ReconcileFailed" in described and 'jobs.batch "refused-train" is forbidden' in described, described
    assert kube.maybe("job", "refused-train") is None
    kube.c.kubectl("delete", "resourcequota", "no-jobs", "-n", kube.ns)
    obj = kube.wait_ftj(
        "refused",
        lambda o: o["status"].get("jobName") == "refused-train" and condition(o, "Degraded") is None,
        "the retry succeeds and clears the mark",
        timeout=120,
    )
    assert condition(obj, "Accepted")["status"] == "True"  # type: ignore[index]
