"""The one module that talks to the Kubernetes API directly (everything else goes through kopf)."""

from __future__ import annotations

import logging

import kubernetes
from kubernetes.client.exceptions import ApiException

logger = logging.getLogger(__name__)


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
    except ApiException as exc:
        if exc.status == 409:
            return False
        raise
    logger.info("created peering object %s", name)
    return True
