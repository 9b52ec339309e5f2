"""The real node's helpers, for tests/e2e/ and the benches: the local registry's images, the install with
manifests/overlays/local, restricted namespaces, waiting for real pods."""

from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.error
import urllib.request
from typing import Any

from tests.support.kube import REPO, Cluster, poll

REGISTRY_PORT = os.environ.get("LORAPLANE_REGISTRY_PORT", "5000")
REGISTRY = f"localhost:{REGISTRY_PORT}/loraplane"
TAG = "0.1.0"
IMAGES = ("operator", "router", "trainer", "vllm-cpu")
SYSTEM_NS = "loraplane-system"
NODE = os.environ.get("LORAPLANE_NODE_NAME", "loraplane-node-0")
# the node bridge's address (hack/lib/node.sh): where pods reach services of this host
NODE_IP = os.environ.get("LORAPLANE_NODE_SUBNET", "10.245.0.0/24").rsplit(".", 1)[0] + ".1"

# A pod that can never start: these waiting reasons end a wait at once, with the reason.
STUCK = ("ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "InvalidImageName", "CrashLoopBackOff")


def registry_has(image: str, tag: str = TAG) -> bool:
    url = f"http://127.0.0.1:{REGISTRY_PORT}/v2/loraplane/{image}/tags/list"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return tag in (json.load(response).get("tags") or [])
    except (urllib.error.URLError, OSError, ValueError):
        return False


def pod_problem(pod: dict[str, Any]) -> str | None:
    """Why a pod will not start by itself (a stuck waiting reason), or None."""
    statuses = pod.get("status", {}).get("initContainerStatuses", []) + pod.get("status", {}).get(
        "containerStatuses", []
    )
    for cs in statuses:
        waiting = cs.get("state", {}).get("waiting", {})
        if waiting.get("reason") in STUCK:
            return f"{cs['name']}: {waiting.get('reason')}: {waiting.get('message', '')}"
    return None


def is_ready(pod: dict[str, Any]) -> bool:
    return any(x["type"] == "Ready" and x["status"] == "True" for x in pod.get("status", {}).get("conditions", []))


def wait_pods_ready(c: Cluster, ns: str, selector: str, count: int, timeout: float) -> list[dict[str, Any]]:
    """`count` Ready pods matching `selector`; fails at once on a pod that cannot start."""

    def ready() -> list[dict[str, Any]] | None:
        items = c.get("pods", "-n", ns, "-l", selector)["items"]
        pods = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        for p in pods:
            problem = pod_problem(p)
            if problem:
                raise AssertionError(f"pod {ns}/{p['metadata']['name']} cannot start: {problem}")
        good = [p for p in pods if is_ready(p)]
        return good if len(good) >= count else None

    return poll(f"{count} Ready pod(s) {selector} in {ns}", ready, timeout=timeout, interval=1)  # type: ignore[no-any-return]


def install_local_overlay(c: Cluster, timeout_s: int = 600) -> None:
    """`kubectl apply -k manifests/overlays/local` as a user would; returns once operator and router rolled out.

    Nothing is created by hand: the install's bootstrap Job makes the router's admin key and API keys.
    Idempotent: a second call on the same cluster re-applies and waits again.
    """
    # The CRDs first (the custom resources of the same apply need them established), then the rest.
    c.kubectl("apply", "-k", str(REPO / "manifests/crds"))
    c.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    c.kubectl("apply", "-k", str(REPO / "manifests/overlays/local"))
    for name in ("loraplane-operator", "loraplane-router"):
        c.kubectl("rollout", "status", f"deployment/{name}", "-n", SYSTEM_NS, f"--timeout={timeout_s}s")


def restricted_namespace(c: Cluster, prefix: str) -> str:
    """A new namespace that enforces Pod Security `restricted`, with its default ServiceAccount."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    c.kubectl("create", "namespace", name)
    c.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    poll(
        f"ServiceAccount default in {name}",
        lambda: c.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    return name


def router_api_key(c: Cluster) -> str:
    """The API key the install's bootstrap Job created (for every model), read as an admin would."""
    out = c.kubectl("get", "secret", "loraplane-router-keys", "-n", SYSTEM_NS, "-o", "jsonpath={.data.keys\\.json}")
    keys = json.loads(base64.b64decode(out.stdout))
    return str(next(iter(keys)))


def router_url(c: Cluster) -> str:
    """The router Service's ClusterIP URL (this host reaches ClusterIPs through the node's bridge)."""
    ip = c.get("service", "loraplane-router", "-n", SYSTEM_NS)["spec"]["clusterIP"]
    return f"http://{ip}:8000"


def resource(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A Loraplane object (FineTuneJob, ModelServer) as a user writes it."""
    metadata: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    return {"apiVersion": "loraplane.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}
