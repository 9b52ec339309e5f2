"""Pure builders: the desired children of a FineTuneJob, compared as plain dicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loraplane.api.finetunejob import FineTuneJobSpec
from loraplane.api.trainer_spec import TrainerSpec
from loraplane.operator.finetunejob import builders
from loraplane.operator.owner import Owner
from loraplane.operator.router_client import admin_key, router_for
from loraplane.operator.settings import OperatorSettings

OWNER = Owner(kind="FineTuneJob", name="med", namespace="team-a", uid="u-1")
SETTINGS = OperatorSettings(priority=1, trainer_image="trainer:test")
OWNER_REF = {
    "apiVersion": "loraplane.io/v1alpha1",
    "kind": "FineTuneJob",
    "name": "med",
    "uid": "u-1",
    "controller": True,
    "blockOwnerDeletion": True,
}
LABELS = {
    "loraplane.io/finetunejob": "med",
    "app.kubernetes.io/component": "trainer",
    "app.kubernetes.io/managed-by": "loraplane",
}


def spec(**over: Any) -> FineTuneJobSpec:
    base: dict[str, Any] = {
        "baseModel": {"uri": "hf://Qwen/Qwen2.5-7B-Instruct@abc", "tokenSecretRef": {"name": "hf", "key": "token"}},
        "dataset": {"uri": "pvc://data/medical.jsonl"},
        "resources": {
            "gpus": 2,
            "memory": "64Gi",
            "cpu": "8",
            "nodeSelector": {"gpu": "a100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "training",
        },
    }
    base.update(over)
    return FineTuneJobSpec.model_validate(base)


def test_configmap_holds_the_rendered_trainer_spec() -> None:
    cm = builders.spec_configmap(OWNER, spec())
    assert cm["metadata"] == {
        "name": "med-spec",
        "namespace": "team-a",
        "labels": LABELS,
        "ownerReferences": [OWNER_REF],
    }
    rendered = TrainerSpec.model_validate(json.loads(cm["data"]["spec.json"]))
    assert rendered.output_dir == "/mnt/pvc/med-adapter/team-a/med"
    assert rendered.cache_dir == "/var/cache/loraplane"
    assert rendered.base_model.uri == "hf://Qwen/Qwen2.5-7B-Instruct@abc"
    assert rendered.hub_token_env == "LORAPLANE_HUB_TOKEN"  # the token itself only reaches the pod env


def test_store_claim_created_only_without_an_existing_claim() -> None:
    claim = builders.store_claim(OWNER, spec(), SETTINGS)
    assert claim == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "med-adapter", "namespace": "team-a", "labels": LABELS},  # Retain: not owned
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}},
    }
    deleted = builders.store_claim(OWNER, spec(retentionPolicy="Delete"), SETTINGS)
    assert deleted is not None and deleted["metadata"]["ownerReferences"] == [OWNER_REF]
    assert builders.store_claim(OWNER, spec(output={"storageClaim": "adapters"}), SETTINGS) is None
    assert builders.adapter_uri(OWNER, spec(output={"storageClaim": "adapters"})) == "pvc://adapters/team-a/med"


def test_job_fields() -> None:
    job = builders.training_job(OWNER, spec(), SETTINGS)
    assert job["metadata"] == {
        "name": "med-train",
        "namespace": "team-a",
        "labels": LABELS,
        "ownerReferences": [OWNER_REF],
    }
    js = job["spec"]
    assert js["suspend"] is False
    assert (
        js["backoffLimit"] == 3
        and js["activeDeadlineSeconds"] == 7 * 86400
        and js["ttlSecondsAfterFinished"] == 7 * 86400
    )
    assert js["podFailurePolicy"] == {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [10, 11, 12, 13, 14, 16, 17]},
            },
            {"action": "Ignore", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [18]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }
    pod = js["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "loraplane-trainer"
    assert pod["terminationGracePeriodSeconds"] == 900
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "training"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (c,) = pod["containers"]
    assert c["image"] == "trainer:test"
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["resources"] == {
        "requests": {"nvidia.com/gpu": "2", "cpu": "8", "memory": "64Gi"},
        "limits": {"nvidia.com/gpu": "2", "memory": "64Gi"},
    }
    assert c["command"] == [
        "torchrun", "--nproc-per-node=2", "--standalone",
        "-m", "loraplane.trainer", "--spec", "/etc/loraplane/spec.json", "--termination-log", "/dev/termination-log",
    ]  # fmt: skip
    token = [e for e in c["env"] if e["name"] == "LORAPLANE_HUB_TOKEN"]
    assert token == [{"name": "LORAPLANE_HUB_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]
    assert {"name": "LORAPLANE_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c["env"]
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["store"] == "/mnt/pvc/med-adapter"  # the output dir lives on it: retries resume there
    assert mounts["data-0"] == "/mnt/pvc/data"
    assert mounts["dshm"] == "/dev/shm"
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["data-0"]["persistentVolumeClaim"] == {"claimName": "data", "readOnly": True}
    assert vols["spec"] == {"name": "spec", "configMap": {"name": "med-spec"}}


def test_no_token_env_without_a_secret_and_plain_python_on_one_gpu() -> None:
    s = spec(baseModel={"uri": "builtin://smollm2-135m-instruct"}, resources={"gpus": 1})
    (c,) = builders.training_job(OWNER, s, SETTINGS)["spec"]["template"]["spec"]["containers"]
    assert not any(e["name"] == "LORAPLANE_HUB_TOKEN" for e in c["env"])
    assert c["command"][:3] == ["python", "-m", "loraplane.trainer"]


def test_suspend_queue_and_deadline() -> None:
    job = builders.training_job(OWNER, spec(suspend=True), SETTINGS)
    assert job["spec"]["suspend"] is True
    queued = builders.training_job(
        OWNER, spec(resources={"gpus": 1, "queueName": "gpu-queue", "activeDeadlineSeconds": 60}), SETTINGS
    )
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert queued["spec"]["template"]["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert "suspend" not in queued["spec"]  # Kueue owns it
    assert queued["spec"]["activeDeadlineSeconds"] == 60


def test_multi_node_is_an_indexed_job_with_a_headless_service() -> None:
    s = spec(resources={"gpus": 8, "nodes": 2})
    job = builders.training_job(OWNER, s, SETTINGS)
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == "med-train"
    assert pod["containers"][0]["command"][:6] == [
        "torchrun",
        "--nproc-per-node=8",
        "--nnodes=2",
        "--node-rank=$(JOB_COMPLETION_INDEX)",
        "--master-addr=med-train-0.med-train.team-a.svc",
        "--master-port=29500",
    ]
    svc = builders.rendezvous_service(OWNER, s)
    assert svc is not None
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"loraplane.io/finetunejob": "med", "app.kubernetes.io/component": "trainer"}
    assert builders.rendezvous_service(OWNER, spec()) is None


def test_children_are_deterministic_and_end_with_the_job() -> None:
    a = builders.children(OWNER, spec(), SETTINGS)
    b = builders.children(OWNER, spec(), SETTINGS)
    assert a == b
    assert [c["kind"] for c in a] == ["ServiceAccount", "RoleBinding", "ConfigMap", "PersistentVolumeClaim", "Job"]


def test_extra_pod_annotations_from_settings() -> None:
    cfg = OperatorSettings(priority=1, pod_annotations={"sidecar.istio.io/inject": "false"})
    job = builders.training_job(OWNER, spec(), cfg)
    assert job["spec"]["template"]["metadata"]["annotations"] == {"sidecar.istio.io/inject": "false"}


def test_oci_output_reaches_the_trainer_and_only_its_pod_mounts_the_login() -> None:
    s = spec(
        output={"uri": "oci://registry.example.com/adapters/medical", "credentialsSecret": "push", "plainHttp": True}
    )
    rendered = TrainerSpec.model_validate(json.loads(builders.spec_configmap(OWNER, s)["data"]["spec.json"]))
    assert rendered.output_uri == "oci://registry.example.com/adapters/medical:med"  # tag: the job's name
    assert rendered.output_plain_http is True
    pod = builders.training_job(OWNER, s, SETTINGS)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"] == {"secretName": "push", "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}
    (c,) = pod["containers"]
    assert {"name": volume["name"], "mountPath": "/etc/loraplane/registry", "readOnly": True} in c["volumeMounts"]
    assert {"name": "DOCKER_CONFIG", "value": "/etc/loraplane/registry"} in c["env"]
    # without a login nothing is mounted; the cleanup Job never gets it
    plain = builders.training_job(OWNER, spec(output={"uri": "oci://r.example.com/a"}), SETTINGS)["spec"]["template"]
    assert not [v for v in plain["spec"]["volumes"] if "secret" in v]
    cleanup = builders.cleanup_job(OWNER, s, SETTINGS)["spec"]["template"]["spec"]
    assert not [v for v in cleanup.get("volumes", []) if "secret" in v]


def test_the_router_admin_key_is_read_from_its_file_at_each_use(tmp_path: Path) -> None:
    """The install mounts the Secret as a file: a key the bootstrap Job creates (or a rotation) after the operator
    started reaches the next admin call; without the file's content the key setting applies."""
    key_file = tmp_path / "key"
    settings = OperatorSettings(router_url="http://router:8000", router_admin_key_file=key_file, router_admin_key="env")
    assert admin_key(settings) == "env"  # the Secret does not exist yet: optional mount, no file
    key_file.write_text("first\n")
    assert admin_key(settings) == "first"
    first = router_for(settings)
    key_file.write_text("rotated")
    assert admin_key(settings) == "rotated" and router_for(settings) is not first
