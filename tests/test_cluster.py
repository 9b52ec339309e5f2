"""The test control plane itself (hack/cluster.sh): KWOK nodes, scheduling, Jobs, ServiceAccounts.

These pin down what the operator tests rely on, including the KWOK stage contract of
hack/kwok/pod-stages.yaml: a Job's pods run and then exit with the code, reason and termination
message given by `kwok.loraplane.io/*` annotations on the pod (template).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

CPU_NODE = "kwok-cpu-0"
GPU_NODES = ("kwok-gpu-0", "kwok-gpu-1")
TIMEOUT = 60.0
T = TypeVar("T")


class Cluster(Protocol):
    """What the session fixture `cluster` (tests/conftest.py) provides."""

    kubeconfig: Path
    bin_dir: Path

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]: ...


def kubectl(cluster: Cluster, *args: str, input: str | None = None) -> str:
    proc = cluster.kubectl(*args, check=False, input=input)
    assert proc.returncode == 0, f"kubectl {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}"
    return proc.stdout


def get(cluster: Cluster, *args: str) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(kubectl(cluster, "get", "-o", "json", *args))
    return obj


def apply(cluster: Cluster, manifest: dict[str, Any]) -> None:
    kubectl(cluster, "apply", "-f", "-", input=json.dumps(manifest))


def poll(
    what: str,
    probe: Callable[[], T | None],
    state: Callable[[], Any] | None = None,
    timeout: float = TIMEOUT,
    interval: float = 0.2,
) -> T:
    """Call `probe` until it returns something truthy; at the deadline fail with `what` and `state()`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f"\nlast state: {json.dumps(state(), indent=1, default=str)[:4000]}" if state else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c.get("type") == ctype), None)


def pods_of_job(cluster: Cluster, namespace: str, job: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get(cluster, "pods", "-n", namespace, "-l", f"job-name={job}")["items"]
    return items


def job_if(cluster: Cluster, namespace: str, name: str, ctype: str) -> dict[str, Any] | None:
    """The Job if its condition `ctype` is True, else None."""
    job = get(cluster, "job", name, "-n", namespace)
    cond = condition(job, ctype)
    return job if cond and cond["status"] == "True" else None


def job_manifest(
    name: str,
    namespace: str,
    annotations: dict[str, str] | None = None,
    containers: tuple[str, ...] = ("main",),
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": c, "image": "registry.k8s.io/pause:3.10"} for c in containers],
                },
            },
        },
    }


def wait_default_sa(cluster: Cluster, namespace: str) -> None:
    poll(
        f"ServiceAccount default in namespace {namespace}",
        lambda: cluster.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False).returncode == 0,
    )


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace whose default ServiceAccount exists (pods are rejected until it does)."""
    name = f"cl-{secrets.token_hex(4)}"
    kubectl(cluster, "create", "namespace", name)
    wait_default_sa(cluster, name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_nodes_ready_and_gpu_nodes_advertise_8_gpus(cluster: Cluster) -> None:
    nodes = {n["metadata"]["name"]: n for n in get(cluster, "nodes", "-l", "type=kwok")["items"]}
    assert set(nodes) == {CPU_NODE, *GPU_NODES}
    for name, node in nodes.items():
        ready = condition(node, "Ready")
        assert ready is not None and ready["status"] == "True", f"{name} not Ready: {node['status']}"
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert not node["spec"].get("taints"), f"{name} is tainted: {node['spec']['taints']}"
    for name in GPU_NODES:
        status = nodes[name]["status"]
        assert status["capacity"]["nvidia.com/gpu"] == "8"
        assert status["allocatable"]["nvidia.com/gpu"] == "8"
        assert nodes[name]["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    assert "nvidia.com/gpu" not in nodes[CPU_NODE]["status"]["allocatable"]
    assert nodes[CPU_NODE]["status"]["allocatable"]["cpu"] == "32"


def test_gpu_pod_is_scheduled_on_a_gpu_node_and_runs(cluster: Cluster, ns: str) -> None:
    apply(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "gpu", "namespace": ns},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    }
                ]
            },
        },
    )

    def running() -> dict[str, Any] | None:
        pod = get(cluster, "pod", "gpu", "-n", ns)
        return pod if pod["status"].get("phase") == "Running" else None

    pod = poll("pod gpu Running", running, state=lambda: get(cluster, "pod", "gpu", "-n", ns)["status"])
    assert pod["spec"]["nodeName"] in GPU_NODES
    ready = condition(pod, "Ready")
    assert ready is not None and ready["status"] == "True"
    assert pod["status"]["podIP"]


def test_pod_wanting_more_gpus_than_a_node_has_stays_unschedulable(cluster: Cluster, ns: str) -> None:
    apply(
        cluster,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "greedy", "namespace": ns},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"limits": {"nvidia.com/gpu": "9"}},
                    }
                ]
            },
        },
    )

    def unschedulable() -> dict[str, Any] | None:
        cond = condition(get(cluster, "pod", "greedy", "-n", ns), "PodScheduled")
        return cond if cond and cond["status"] == "False" and cond.get("reason") == "Unschedulable" else None

    cond = poll(
        "pod greedy marked Unschedulable",
        unschedulable,
        state=lambda: get(cluster, "pod", "greedy", "-n", ns)["status"],
    )
    assert "nvidia.com/gpu" in cond["message"]


def test_job_pod_completes_and_job_is_complete(cluster: Cluster, ns: str) -> None:
    apply(cluster, job_manifest("ok", ns))
    job = poll(
        "Job ok Complete",
        lambda: job_if(cluster, ns, "ok", "Complete"),
        state=lambda: {
            "job": get(cluster, "job", "ok", "-n", ns)["status"],
            "pods": [p["status"] for p in pods_of_job(cluster, ns, "ok")],
        },
    )
    assert job["status"]["succeeded"] == 1
    (pod,) = pods_of_job(cluster, ns, "ok")
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["spec"]["nodeName"]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"


def test_job_pod_exit_code_and_termination_message_from_annotations(cluster: Cluster, ns: str) -> None:
    """A failing trainer: exit code 42 after 2s of Running, a termination message, a sidecar exiting 0."""
    message = json.dumps({"phase": "train", "error": "CUDA out of memory"})
    apply(
        cluster,
        job_manifest(
            "boom",
            ns,
            annotations={
                "kwok.loraplane.io/exit-code": "42",
                "kwok.loraplane.io/message": message,
                "kwok.loraplane.io/duration": "2s",
                "kwok.loraplane.io/container": "trainer",
            },
            containers=("trainer", "sidecar"),
            backoffLimit=3,
            podFailurePolicy={
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [42]},
                    },
                ]
            },
        ),
    )
    job = poll(
        "Job boom Failed",
        lambda: job_if(cluster, ns, "boom", "Failed"),
        state=lambda: {
            "job": get(cluster, "job", "boom", "-n", ns)["status"],
            "pods": [p["status"] for p in pods_of_job(cluster, ns, "boom")],
        },
    )
    failed = condition(job, "Failed")
    assert failed is not None and failed["reason"] == "PodFailurePolicy"
    (pod,) = pods_of_job(cluster, ns, "boom")  # FailJob: no retry despite backoffLimit 3
    assert pod["status"]["phase"] == "Failed"
    statuses = {s["name"]: s["state"]["terminated"] for s in pod["status"]["containerStatuses"]}
    assert statuses["trainer"]["exitCode"] == 42
    assert statuses["trainer"]["reason"] == "Error"
    assert statuses["trainer"]["message"] == message
    assert statuses["sidecar"]["exitCode"] == 0
    assert "message" not in statuses["sidecar"]
    ran = (
        datetime.fromisoformat(statuses["trainer"]["finishedAt"])
        - datetime.fromisoformat(statuses["trainer"]["startedAt"])
    ).total_seconds()
    assert ran >= 1, f"the pod should have stayed Running ~2s, ran {ran}s"


def test_running_job_pod_is_ended_on_demand_by_annotating_it(cluster: Cluster, ns: str) -> None:
    """A pod held Running (huge duration) terminates once annotated: kwok re-reads the annotations."""
    apply(cluster, job_manifest("hold", ns, annotations={"kwok.loraplane.io/duration": "100000h"}))

    def running_pod() -> dict[str, Any] | None:
        pods = pods_of_job(cluster, ns, "hold")
        return pods[0] if pods and pods[0]["status"].get("phase") == "Running" else None

    pod = poll(
        "Job hold's pod Running", running_pod, state=lambda: [p["status"] for p in pods_of_job(cluster, ns, "hold")]
    )
    assert job_if(cluster, ns, "hold", "Complete") is None
    kubectl(
        cluster,
        "annotate",
        "pod",
        pod["metadata"]["name"],
        "-n",
        ns,
        "--overwrite",
        "kwok.loraplane.io/exit-code=3",
        "kwok.loraplane.io/reason=Preempted",
        "kwok.loraplane.io/message=node drained",
        "kwok.loraplane.io/duration=0s",
    )
    poll(
        "Job hold Failed",
        lambda: job_if(cluster, ns, "hold", "Failed"),
        state=lambda: [p["status"] for p in pods_of_job(cluster, ns, "hold")],
    )
    (pod,) = pods_of_job(cluster, ns, "hold")
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (3, "Preempted", "node drained")


def test_new_namespace_gets_default_serviceaccount(cluster: Cluster) -> None:
    name = f"cl-sa-{secrets.token_hex(4)}"
    kubectl(cluster, "create", "namespace", name)
    try:
        wait_default_sa(cluster, name)
        # ...and the root CA bundle that projected service-account volumes mount
        poll(
            f"ConfigMap kube-root-ca.crt in namespace {name}",
            lambda: cluster.kubectl("get", "configmap", "kube-root-ca.crt", "-n", name, check=False).returncode == 0,
        )
        ca = get(cluster, "configmap", "kube-root-ca.crt", "-n", name)
        assert "BEGIN CERTIFICATE" in ca["data"]["ca.crt"]
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
