"""Helpers of the end-to-end tests: the local registry's images and waiting for real pods."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from tests.kube_harness import Cluster, poll

REGISTRY_PORT = os.environ.get("LORAPLANE_REGISTRY_PORT", "5000")
REGISTRY = f"localhost:{REGISTRY_PORT}/loraplane"
TAG = "0.1.0"
IMAGES = ("operator", "router", "trainer", "vllm-cpu")
SYSTEM_NS = "loraplane-system"
NODE = os.environ.get("LORAPLANE_NODE_NAME", "loraplane-node-0")

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
