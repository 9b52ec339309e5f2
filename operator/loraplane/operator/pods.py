"""Pod pieces both controllers' builders share (pure): security, scheduling, resources, the hub token.

Invariant: every pod the operator creates runs under the restricted Pod Security Standard and is placed
by the owner's `spec.resources` (node selector, tolerations, priority class, requests and limits).

Common layout of the operator's pods:
    /var/cache/loraplane    model cache (CACHE_DIR): hub downloads, dequantized GGUF
    /mnt/pvc/<claim>        the claim a pvc:// URI names (MOUNTS.pvc_root)
"""

from __future__ import annotations

from typing import Any

from loraplane.api.common import PodResources, SecretKeyRef
from loraplane.api.oci import DOCKER_CONFIG_ENV, REGISTRY_AUTH_DIR
from loraplane.api.s3 import CREDENTIALS_FILE_ENV, ENDPOINT_ENV, REGION_ENV, S3_AUTH_DIR, S3_CREDENTIALS_KEY, S3Spec
from loraplane.api.trainer_spec import HUB_TOKEN_ENV, Mounts

CACHE_DIR = "/var/cache/loraplane"
MOUNTS = Mounts()


def restricted_pod_security() -> dict[str, Any]:
    """Pod-level securityContext of every pod the operator creates (restricted Pod Security Standard)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def restricted_container_security() -> dict[str, Any]:
    """Container-level securityContext of every container the operator creates (restricted standard)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def scheduling(res: PodResources) -> dict[str, Any]:
    """The pod spec's placement fields the resources set: nodeSelector, tolerations, priorityClassName."""
    fields: dict[str, Any] = {}
    if res.node_selector:
        fields["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        fields["tolerations"] = [t.to_k8s() for t in res.tolerations]
    if res.priority_class_name:
        fields["priorityClassName"] = res.priority_class_name
    return fields


def container_resources(res: PodResources) -> dict[str, Any]:
    """Requests and limits of one container (training or vLLM); GPUs and memory are also limits."""
    amounts: dict[str, str] = {}
    if res.gpus:
        amounts["nvidia.com/gpu"] = str(res.gpus)
    if res.cpu:
        amounts["cpu"] = res.cpu
    if res.memory:
        amounts["memory"] = res.memory
    if not amounts:
        return {}
    limits = {k: v for k, v in amounts.items() if k != "cpu"}  # no CPU limit: throttling slows training
    return {"requests": dict(amounts), "limits": limits}


def hub_token_env(ref: SecretKeyRef | None) -> list[dict[str, Any]]:
    """The hub token as an env var the kubelet resolves from the Secret (never in a ConfigMap or a log)."""
    if ref is None:
        return []
    return [{"name": HUB_TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def pvc_claim(uri: str | None) -> str | None:
    """The claim a pvc://CLAIM/PATH URI names (None for any other URI)."""
    if uri and uri.startswith("pvc://"):
        return uri.removeprefix("pvc://").split("/", 1)[0]
    return None


REGISTRY_AUTH_VOLUME = "registry-auth"


def registry_auth(secret: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A registry login for the one container that pushes or pulls: (volume, mount, env).

    The kubernetes.io/dockerconfigjson Secret becomes REGISTRY_AUTH_DIR/config.json, where DOCKER_CONFIG
    points (docker's and oras' convention); the kubelet mounts it, the operator never reads it.
    """
    login = [{"key": ".dockerconfigjson", "path": "config.json"}]
    return (
        {"name": REGISTRY_AUTH_VOLUME, "secret": {"secretName": secret, "items": login}},
        {"name": REGISTRY_AUTH_VOLUME, "mountPath": REGISTRY_AUTH_DIR, "readOnly": True},
        {"name": DOCKER_CONFIG_ENV, "value": REGISTRY_AUTH_DIR},
    )


S3_AUTH_VOLUME = "s3-auth"


def s3_access(s3: S3Spec) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """What the one container that pushes to or pulls from an S3-compatible store needs: (volumes, mounts, env).

    The Secret's `credentials` key becomes S3_AUTH_DIR/credentials, where AWS_SHARED_CREDENTIALS_FILE points;
    the kubelet mounts it, the operator never reads it. Endpoint and region are plain settings.
    """
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: list[dict[str, Any]] = []
    if s3.credentials_secret:
        items = [{"key": S3_CREDENTIALS_KEY, "path": S3_CREDENTIALS_KEY}]
        volumes.append({"name": S3_AUTH_VOLUME, "secret": {"secretName": s3.credentials_secret, "items": items}})
        mounts.append({"name": S3_AUTH_VOLUME, "mountPath": S3_AUTH_DIR, "readOnly": True})
        env.append({"name": CREDENTIALS_FILE_ENV, "value": f"{S3_AUTH_DIR}/{S3_CREDENTIALS_KEY}"})
    if s3.endpoint:
        env.append({"name": ENDPOINT_ENV, "value": s3.endpoint.rstrip("/")})
    if s3.region:
        env.append({"name": REGION_ENV, "value": s3.region})
    return volumes, mounts, env
