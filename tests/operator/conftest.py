"""Helpers for FineTuneJob controller tests against the real control plane."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.kube_harness import Cluster, add_store, poll


def ftj(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct@main"},
        "dataset": {"uri": "builtin://medical"},
        "resources": {"gpus": 1},
        "output": {"storageClaim": "store"},
    }
    body.update(spec)
    return {"apiVersion": "loraplane.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name}, "spec": body}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def assert_applied_child_of(child: dict[str, Any], owner: dict[str, Any]) -> None:
    """`child` was server-side applied by the operator and is controlled by `owner` (garbage-collected with it)."""
    (ref,) = child["metadata"]["ownerReferences"]
    meta = owner["metadata"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (owner["kind"], meta["name"], meta["uid"], True)
    managers = [(m["manager"], m["operation"]) for m in child["metadata"]["managedFields"]]
    assert ("loraplane-operator", "Apply") in managers, managers


def no_room_for(resource: str) -> dict[str, Any]:
    """A ResourceQuota that allows no object of `resource` (e.g. count/jobs.batch): its creates get 403."""
    name = "no-" + resource.removeprefix("count/").split(".")[0]
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": {resource: "0"}}}


class Kube:
    """Small, polling helpers over kubectl for one namespace."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.c, self.ns = cluster, namespace

    def get(self, *args: str) -> dict[str, Any]:
        return self.c.get(*args, "-n", self.ns)

    def maybe(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.c.kubectl("get", kind, name, "-n", self.ns, "-o", "json", "--show-managed-fields", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def pods(self, ftj_name: str) -> list[dict[str, Any]]:
        items = self.get("pods", "-l", f"loraplane.io/finetunejob={ftj_name}")["items"]
        return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])

    def running_pod(self, ftj_name: str, exclude: set[str] | None = None, timeout: float = 90) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for p in self.pods(ftj_name):
                if p["metadata"]["name"] in (exclude or set()) or p["metadata"].get("deletionTimestamp"):
                    continue
                if p.get("status", {}).get("phase") == "Running":
                    return p
            return None

        result: dict[str, Any] = poll(f"a Running pod of {ftj_name}", find, timeout=timeout)
        return result

    def finish_pod(self, pod: str, exit_code: int, message: str | None = None, reason: str | None = None) -> None:
        """What the kubelet would report when the trainer exits (KWOK reads these annotations)."""
        args = [f"kwok.loraplane.io/exit-code={exit_code}", "kwok.loraplane.io/duration=0s"]
        if message is not None:
            args.append(f"kwok.loraplane.io/message={message}")
        if reason is not None:
            args.append(f"kwok.loraplane.io/reason={reason}")
        self.c.kubectl("annotate", "pod", pod, "-n", self.ns, "--overwrite", *args)

    def wait_ftj(
        self, name: str, check: Callable[[dict[str, Any]], Any], what: str, timeout: float = 90
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.get("ftj", name)
            obj.setdefault("status", {})
            return obj if check(obj) else None

        result: dict[str, Any] = poll(f"{name}: {what}", probe, timeout=timeout)
        return result

    def events(self, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(
            "events", "--field-selector", f"involvedObject.name={name},involvedObject.kind=FineTuneJob"
        )["items"]
        return items


@pytest.fixture
def kube(installed: Cluster, namespace: str) -> Kube:
    """The namespace with an adapter store (a PVC bound to a hostPath PV, as no provisioner runs here)."""
    add_store(installed, namespace)
    return Kube(installed, namespace)
