"""The one module that talks to the Kubernetes API directly (everything else goes through kopf).

Invariant: every read and write of the reconcilers goes through here, as plain dicts: `apply` is
server-side apply under one field manager (never check-then-create); a ruff banned-api rule keeps the
client library out of every other module.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger(__name__)

# What every call here raises when the API server answers an error (status, reason, body): callers
# classify it with the helpers at the end of this module, without importing the client library.
ApiError = ApiException


def _load_config() -> None:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


def ensure_peering(name: str, namespace: str | None) -> bool:
    """Create kopf's peering object if it is missing; True when this call created it."""
    _load_config()
    api = kubernetes.client.CustomObjectsApi()
    body = {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering" if namespace else "ClusterKopfPeering",
        "metadata": {"name": name},
    }
    try:
        if namespace:
            api.create_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", body)
        else:
            api.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
    except ApiError as exc:
        if exc.status == 409:
            return False
        raise
    logger.info("created peering object %s", name)
    return True


def create_secret_if_absent(name: str, namespace: str, data: dict[str, str]) -> bool:
    """Create an Opaque Secret with `data` (string values) unless one of that name exists: True when this call
    created it. Needs only the `create` verb: an existing Secret is never read, compared or replaced."""
    _load_config()
    body = kubernetes.client.V1Secret(
        metadata=kubernetes.client.V1ObjectMeta(
            name=name, namespace=namespace, labels={"app.kubernetes.io/part-of": "loraplane"}
        ),
        type="Opaque",
        string_data=data,
    )
    try:
        kubernetes.client.CoreV1Api().create_namespaced_secret(namespace, body)
    except ApiError as exc:
        if exc.status == 409:
            return False
        raise
    return True


# ----------------------------------------------------------------- raw JSON access for the reconciler

_PATHS: dict[tuple[str, str], tuple[str, str]] = {
    # (apiVersion, kind) -> (API prefix, plural)
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "PersistentVolumeClaim"): ("/api/v1", "persistentvolumeclaims"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    ("batch/v1", "Job"): ("/apis/batch/v1", "jobs"),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("loraplane.io/v1alpha1", "FineTuneJob"): ("/apis/loraplane.io/v1alpha1", "finetunejobs"),
    ("loraplane.io/v1alpha1", "ModelServer"): ("/apis/loraplane.io/v1alpha1", "modelservers"),
}

_client: kubernetes.client.ApiClient | None = None
_client_lock = threading.Lock()


def client() -> kubernetes.client.ApiClient:
    """One API client per process (thread-safe connection pool), configured on first use."""
    global _client
    with _client_lock:
        if _client is None:
            _load_config()
            config = kubernetes.client.Configuration.get_default_copy()
            config.connection_pool_maxsize = 32
            _client = kubernetes.client.ApiClient(config)
        return _client


def _path(api_version: str, kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    prefix, plural = _PATHS[(api_version, kind)]
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def _call(
    method: str,
    path: str,
    *,
    body: Any = None,
    content_type: str | None = None,
    query: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    api = client()
    method_, url, headers_, body_, post = api.param_serialize(
        method, path, query_params=query or [], header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    resp = api.call_api(method_, url, header_params=headers_, body=body_, post_params=post, _request_timeout=30)
    raw = resp.read()
    if not 200 <= resp.status < 300:
        error = ApiError(status=resp.status, reason=resp.reason)
        error.body = raw
        raise error
    data: dict[str, Any] = json.loads(raw or b"{}")
    return data


def get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as a plain dict, or None when it does not exist."""
    try:
        return _call("GET", _path(api_version, kind, namespace, name))
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def list_objects(api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
    data = _call("GET", _path(api_version, kind, namespace), query=[("labelSelector", selector)])
    return list(data.get("items") or [])


def apply(obj: dict[str, Any], field_manager: str) -> dict[str, Any]:
    """Server-side apply under a fixed field manager (creates or converges; never check-then-create)."""
    meta = obj["metadata"]
    return _call(
        "PATCH",
        _path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]),
        body=obj,
        content_type="application/apply-patch+yaml",
        query=[("fieldManager", field_manager), ("force", "true")],
    )


def merge_patch(
    api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any], sub: str | None = None
) -> dict[str, Any]:
    """JSON merge patch (a `metadata.resourceVersion` in it makes the write conditional: 409 if stale)."""
    return _call(
        "PATCH", _path(api_version, kind, namespace, name, sub), body=patch, content_type="application/merge-patch+json"
    )


def patch_status(api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    """Merge-patch the status subresource."""
    return merge_patch(api_version, kind, namespace, name, {"status": status}, "status")


def peering(name: str, namespace: str | None) -> dict[str, Any] | None:
    """kopf's peering object (ClusterKopfPeering, or KopfPeering in `namespace`), or None when missing."""
    plural = "kopfpeerings" if namespace else "clusterkopfpeerings"
    where = f"/namespaces/{namespace}" if namespace else ""
    try:
        return _call("GET", f"/apis/kopf.dev/v1{where}/{plural}/{name}")
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def is_conflict_or_gone(exc: BaseException) -> bool:
    """A write lost a race (409: stale resourceVersion) or its object went away (404, 410)."""
    return isinstance(exc, ApiError) and exc.status in (404, 409, 410)


def error_text(exc: BaseException) -> str:
    """One line for a log or a condition: an API error's status and the server's message, else the exception."""
    if not isinstance(exc, ApiError):
        return f"{type(exc).__name__}: {exc}"
    message = ""
    try:
        body = json.loads(exc.body or b"{}")
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
    except ValueError:
        message = (exc.body or b"").decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
    return " ".join(f"API {exc.status} {exc.reason or ''}: {message}".split()).rstrip(":")
