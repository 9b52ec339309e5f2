"""Desired children of a ModelServer: pure functions from the spec to plain Kubernetes dicts.

Children (deterministic names, controller owner reference, applied with server-side apply):
    Deployment <name>-vllm           vLLM OpenAI server, --enable-lora, runtime adapter loading
    Service <name>-vllm              ClusterIP on the vLLM port (the router talks to pods directly)
    PodDisruptionBudget <name>-vllm  at most one replica voluntarily down at a time

Layout inside a vLLM pod:
    /var/cache/loraplane            model cache; the init container `fetch-model` resolves the base model
                                    (hub download, GGUF dequantization, pvc:// path) into it and points
                                    /var/cache/loraplane/model at the checkpoint; vLLM serves that path
    <adapterMountRoot>/<claim>      every adapter store (PVC) the resolved versions live on, read-only
    /mnt/pvc/<claim>                the base model's claim for a pvc:// base model, read-only
The pod template depends only on the spec and the set of adapter-store claims, never on adapter
versions: a new version is loaded at runtime by the router, without restarting pods.
"""

from __future__ import annotations

import json
from typing import Any

from loraplane.api.modelserver import ModelServerSpec
from loraplane.api.trainer_spec import FetchEnv
from loraplane.operator import pods
from loraplane.operator.names import (
    ANNOTATION_ENDPOINT,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_MODELSERVER,
    MANAGED_BY,
)
from loraplane.operator.owner import Owner
from loraplane.operator.settings import OperatorSettings
from loraplane.serving.vllm_args import ServedModel, VllmLaunch, build_args, cluster_cpu_profile, gpu_profile

KIND = "ModelServer"
COMPONENT = "vllm"
CONTAINER = "vllm"
FETCH_CONTAINER = "fetch-model"
# Runs in the init container (trainer image: it has the hub clients and the GGUF dequantizer).
FETCH_COMMAND = ["python", "-m", "loraplane.trainer.fetch"]
MODEL_DIR = f"{pods.CACHE_DIR}/model"
# The startup probe is sized to the weights; the operator does not know their size before the fetch,
# so it assumes a large model (a 7B checkpoint in bf16 is ~15 GiB).
ASSUMED_MODEL_BYTES = 16 * 1024**3


def child_name(name: str) -> str:
    return f"{name}-vllm"


def selector_labels(name: str) -> dict[str, str]:
    return {LABEL_MODELSERVER: name, LABEL_COMPONENT: COMPONENT}


def labels(name: str) -> dict[str, str]:
    return {**selector_labels(name), LABEL_MANAGED_BY: MANAGED_BY}


def _meta(owner: Owner) -> dict[str, Any]:
    return owner.child_meta(child_name(owner.name), labels(owner.name))


def served_model_name(namespace: str, name: str) -> str:
    """The base model's name on vLLM and in the router: `<namespace>.<name>`, the server's router key.

    Every name the router serves is global (base models too), and two ModelServers may serve the same
    base model; namespace and name make it unique (namespaces have no dots, so it is unambiguous).
    """
    return f"{namespace}.{name}"


def vllm_launch(owner: Owner, spec: ModelServerSpec, settings: OperatorSettings) -> VllmLaunch:
    """The vLLM command line, environment and probes (from the serving builder, one source of truth)."""
    profile = gpu_profile() if settings.vllm_profile == "gpu" else cluster_cpu_profile()
    return build_args(
        ServedModel(
            path=MODEL_DIR, name=served_model_name(owner.namespace, owner.name), size_bytes=ASSUMED_MODEL_BYTES
        ),
        spec.vllm,
        profile,
        port=settings.vllm_port,
        host="0.0.0.0",
        # Both versions of every public name are resident during a rollout.
        adapter_count=2 * len(spec.adapters),
    )


def _volumes(spec: ModelServerSpec, settings: OperatorSettings, claims: list[str]) -> list[dict[str, Any]]:
    cache: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": settings.model_cache_claim}}
        if settings.model_cache_claim
        else {"emptyDir": {}}
    )
    volumes: list[dict[str, Any]] = [{"name": "cache", **cache}, {"name": "tmp", "emptyDir": {}}]
    if spec.resources.gpus:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    base = pods.pvc_claim(spec.base_model.uri)
    if base:
        volumes.append({"name": "base-model", "persistentVolumeClaim": {"claimName": base, "readOnly": True}})
    for i, claim in enumerate(claims):
        volumes.append({"name": f"store-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
    return volumes


def _base_mounts(spec: ModelServerSpec) -> list[dict[str, Any]]:
    base = pods.pvc_claim(spec.base_model.uri)
    return [{"name": "base-model", "mountPath": f"{pods.MOUNTS.pvc_root}/{base}", "readOnly": True}] if base else []


def fetch_container(spec: ModelServerSpec, settings: OperatorSettings) -> dict[str, Any]:
    """Init container: resolve the base model into the cache before vLLM starts."""
    env: list[dict[str, Any]] = [
        {"name": FetchEnv.BASE_MODEL, "value": json.dumps(spec.base_model.to_k8s(), sort_keys=True)},
        {"name": FetchEnv.CACHE_DIR, "value": pods.CACHE_DIR},
        {"name": FetchEnv.PVC_ROOT, "value": pods.MOUNTS.pvc_root},
        {"name": "HF_HOME", "value": f"{pods.CACHE_DIR}/hf"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        # the hub token reaches only the container that downloads, through the kubelet
        *pods.hub_token_env(spec.base_model.token_secret_ref),
    ]
    return {
        "name": FETCH_CONTAINER,
        "image": settings.fetch_image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(FETCH_COMMAND),
        "env": env,
        "volumeMounts": [
            {"name": "cache", "mountPath": pods.CACHE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            *_base_mounts(spec),
        ],
        "securityContext": pods.restricted_container_security(),
    }


def vllm_container(
    spec: ModelServerSpec, settings: OperatorSettings, claims: list[str], launch: VllmLaunch
) -> dict[str, Any]:
    fields = launch.container_fields()
    fields["env"] = [
        *fields["env"],
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": f"{pods.CACHE_DIR}/hf"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},  # the init container fetched everything
        {"name": "VLLM_CACHE_ROOT", "value": "/tmp/vllm"},
        {"name": "XDG_CACHE_HOME", "value": "/tmp/.cache"},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "cache", "mountPath": pods.CACHE_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        *_base_mounts(spec),
    ]
    if spec.resources.gpus:
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    root = settings.adapter_mount_root.rstrip("/")
    for i, claim in enumerate(claims):
        mounts.append({"name": f"store-{i}", "mountPath": f"{root}/{claim}", "readOnly": True})
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.vllm.image or settings.vllm_image,
        "imagePullPolicy": settings.image_pull_policy,
        **fields,
        "volumeMounts": mounts,
        "securityContext": pods.restricted_container_security(),
    }
    if not container.get("lifecycle"):
        container.pop("lifecycle", None)
    resources = pods.container_resources(spec.resources)
    if resources:
        container["resources"] = resources
    return container


def deployment(owner: Owner, spec: ModelServerSpec, settings: OperatorSettings, claims: list[str]) -> dict[str, Any]:
    """The vLLM Deployment. Rolling updates keep every replica serving until its successor is ready."""
    launch = vllm_launch(owner, spec, settings)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # vLLM never talks to the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": launch.termination_grace_period_seconds,
        "securityContext": pods.restricted_pod_security(),
        "initContainers": [fetch_container(spec, settings)],
        "containers": [vllm_container(spec, settings, claims, launch)],
        "volumes": _volumes(spec, settings, claims),
        **pods.scheduling(spec.resources),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(owner.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels(owner.name)}, "spec": pod_spec},
        },
    }


def service(owner: Owner, settings: OperatorSettings) -> dict[str, Any]:
    """ClusterIP Service over the ready vLLM pods (direct base-model access; the router uses pod URLs)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(owner.name),
            "ports": [{"name": "http", "port": settings.vllm_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def disruption_budget(owner: Owner) -> dict[str, Any]:
    """At most one replica voluntarily evicted at a time (node drains go one pod after another)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(owner),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(owner.name)}},
    }


def children(
    owner: Owner, spec: ModelServerSpec, settings: OperatorSettings, claims: list[str]
) -> list[dict[str, Any]]:
    """Every child in apply order."""
    return [service(owner, settings), disruption_budget(owner), deployment(owner, spec, settings, claims)]


def replica_url(pod: dict[str, Any], settings: OperatorSettings) -> str | None:
    """Where the router reaches one vLLM pod: http://<podIP>:<port> (None: not reachable yet).

    With settings.trust_endpoint_annotation (simulated clusters, development) the URL comes from the pod
    annotation `loraplane.io/endpoint` instead, and a pod without it is not routable yet: the end-to-end
    tests run vLLM as local processes and point each KWOK pod, whose IP leads nowhere, at one of them.
    """
    if settings.trust_endpoint_annotation:
        annotated = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ENDPOINT)
        return str(annotated).rstrip("/") if annotated else None
    ip = (pod.get("status") or {}).get("podIP")
    return f"http://{ip}:{settings.vllm_port}" if ip else None


def pod_ready(pod: dict[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
