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
    <agentCacheDir>                 the adapter agent's cache (an emptyDir with spec.adapterAgent.cacheSize
                                    as its limit), written by the agent, read-only for vLLM

Each pod also runs the adapter agent (container `adapter-agent`, the router image): the router puts that
replica's desired versions to it and the agent loads and unloads them: it pulls oci:// and s3:// versions
with the registry or S3 login (mounted into it alone) and verifies them, checks a version on a claim (mounted into it
read-only too) against its result.json, and has vLLM load the local copy over localhost.
The pod template depends only on the spec and the set of adapter-store claims, never on adapter
versions: a new version is loaded at runtime (by the agent the router tells), without restarting pods.
"""

from __future__ import annotations

import json
from typing import Any

from loraplane.api.common import quantity_value
from loraplane.api.modelserver import AdapterAgentSpec, ModelServerSpec
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
AGENT_CONTAINER = "adapter-agent"
AGENT_COMMAND = ["python", "-m", "loraplane.serving.agent"]
# The agent evicts beyond this share of the cache's size limit: the kubelet evicts the pod beyond all of it.
AGENT_CACHE_SHARE = 0.8
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
    agent = spec.adapter_agent
    volumes.append({"name": "adapters", "emptyDir": {"sizeLimit": agent.cache_size}})
    volumes.append({"name": "agent-tmp", "emptyDir": {}})
    if agent.credentials_secret:
        volumes.append(pods.registry_auth(agent.credentials_secret)[0])
    if agent.s3:
        volumes.extend(pods.s3_access(agent.s3)[0])
    return volumes


def _base_mounts(spec: ModelServerSpec) -> list[dict[str, Any]]:
    base = pods.pvc_claim(spec.base_model.uri)
    return [{"name": "base-model", "mountPath": f"{pods.MOUNTS.pvc_root}/{base}", "readOnly": True}] if base else []


def _store_mounts(settings: OperatorSettings, claims: list[str]) -> list[dict[str, Any]]:
    """The adapter-store claims, read-only at `<adapterMountRoot>/<claim>` (vLLM loads from there, the agent
    verifies there first)."""
    root = settings.adapter_mount_root.rstrip("/")
    return [{"name": f"store-{i}", "mountPath": f"{root}/{claim}", "readOnly": True} for i, claim in enumerate(claims)]


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
    mounts.extend(_store_mounts(settings, claims))
    mounts.append({"name": "adapters", "mountPath": settings.agent_cache_dir, "readOnly": True})
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


def agent_cache_limit(agent: AdapterAgentSpec) -> int:
    """Bytes of pulled adapters the agent keeps before it evicts unloaded ones."""
    return int(quantity_value(agent.cache_size) * AGENT_CACHE_SHARE)


def agent_container(spec: ModelServerSpec, settings: OperatorSettings, claims: list[str]) -> dict[str, Any]:
    """The adapter agent sidecar: pulls, verifies and loads this replica's adapters (configured by
    spec.adapterAgent)."""
    agent = spec.adapter_agent
    env: list[dict[str, Any]] = [
        {"name": "LORAPLANE_AGENT_PORT", "value": str(settings.agent_port)},
        {"name": "LORAPLANE_AGENT_VLLM_URL", "value": f"http://127.0.0.1:{settings.vllm_port}"},
        {"name": "LORAPLANE_AGENT_CACHE_DIR", "value": settings.agent_cache_dir},
        {"name": "LORAPLANE_AGENT_CACHE_LIMIT_BYTES", "value": str(agent_cache_limit(agent))},
        {"name": "LORAPLANE_AGENT_BASE_MODEL", "value": spec.base_model.uri},
        {"name": "LORAPLANE_AGENT_MAX_LORA_RANK", "value": str(spec.vllm.max_lora_rank)},
        {"name": "LORAPLANE_AGENT_PLAIN_HTTP", "value": "true" if agent.plain_http else "false"},
        {"name": "LORAPLANE_AGENT_LOG_FORMAT", "value": "json"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "adapters", "mountPath": settings.agent_cache_dir},
        {"name": "agent-tmp", "mountPath": "/tmp"},
        *_store_mounts(settings, claims),
    ]
    if agent.credentials_secret:  # the registry login, for this container only
        _, mount, login_env = pods.registry_auth(agent.credentials_secret)
        mounts.append(mount)
        env.append(login_env)
    if agent.s3:  # the S3 store's endpoint and login, for this container only
        _, s3_mounts, s3_env = pods.s3_access(agent.s3)
        mounts.extend(s3_mounts)
        env.extend(s3_env)
    probe = {"httpGet": {"path": "/healthz", "port": "agent"}, "periodSeconds": 5, "timeoutSeconds": 3}
    return {
        "name": AGENT_CONTAINER,
        "image": settings.agent_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(AGENT_COMMAND),
        "env": env,
        "ports": [{"name": "agent", "containerPort": settings.agent_port, "protocol": "TCP"}],
        "readinessProbe": probe,
        "volumeMounts": mounts,
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": pods.restricted_container_security(),
    }


def deployment(owner: Owner, spec: ModelServerSpec, settings: OperatorSettings, claims: list[str]) -> dict[str, Any]:
    """The vLLM Deployment. Rolling updates keep every replica serving until its successor is ready."""
    launch = vllm_launch(owner, spec, settings)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # vLLM never talks to the Kubernetes API
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": launch.termination_grace_period_seconds,
        "securityContext": pods.restricted_pod_security(),
        "initContainers": [fetch_container(spec, settings)],
        "containers": [
            vllm_container(spec, settings, claims, launch),
            agent_container(spec, settings, claims),
        ],
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
