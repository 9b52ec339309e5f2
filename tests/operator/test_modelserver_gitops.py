"""examples/gitops: the Argo CD health checks (run in Lua 5.1, as Argo CD's gopher-lua) against statuses the
controllers really write, and the example app's manifests valid for the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from loraplane.api import FineTuneJob, ModelServer
from loraplane.api.modelserver import ModelServerStatus
from loraplane.api.route import ServerStatus
from loraplane.operator.finetunejob.validation import finetunejob_problems
from loraplane.operator.modelserver.resolve import AdapterPlan, Version
from loraplane.operator.modelserver.route import desired_route
from loraplane.operator.modelserver.status import RouteResult, ServerSnapshot, modelserver_status
from loraplane.operator.modelserver.validation import modelserver_problems

lua51 = pytest.importorskip("lupa.lua51", reason="lupa (dev dependency) runs the Argo CD health checks")

GITOPS = Path(__file__).resolve().parents[2] / "examples" / "gitops"
SHA = "ab" * 32
URL = "http://10.0.0.1:8000"
NOW = "2025-01-01T00:00:00Z"


def health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run an Argo CD health script on `obj` (a global named obj, as Argo CD sets it)."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute((GITOPS / "health" / script).read_text())
    return str(result["status"]), str(result["message"])


def ms_object(status: ModelServerStatus | None, generation: int = 2) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "qwen", "generation": generation}, "spec": {}}
    if status is not None:
        obj["status"] = status.to_k8s()
    return obj


def ms_status(**over: Any) -> ModelServerStatus:
    plan = AdapterPlan("medical", Version("pvc://store/ns/v1", SHA, "v1"))
    route = desired_route("ns.qwen", [URL], [plan], "/mnt/adapters")
    loaded = over.pop("loaded", [f"medical-{SHA[:12]}"])
    spec = ModelServer.model_validate(
        {"spec": {"baseModel": {"uri": "hf://a/b"}, "replicas": over.pop("replicas", 1), "adapters": []}}
    ).spec
    want = spec.replicas
    snap: dict[str, Any] = {
        "generation": 2,
        "problems": [],
        "spec": spec,
        "deployment": {
            "metadata": {"generation": 1},
            "status": {
                "observedGeneration": 1,
                "replicas": want,
                "readyReplicas": want,
                "updatedReplicas": want,
                "availableReplicas": want,
            },
        },
        "pods": [
            {
                "metadata": {"name": "p0"},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            }
        ],
        "replica_urls": {"p0": URL},
        "plans": [plan],
        "route": RouteResult(
            state=ServerStatus.model_validate(
                {
                    "route": route.model_dump(mode="json"),
                    "replicas": [{"url": URL, "healthy": True, "loaded": loaded, "errors": {}}],
                }
            )
        ),
    }
    snap.update(over)
    return modelserver_status(ModelServerStatus(), ServerSnapshot(**snap), NOW)


def test_argocd_configmap_patch_embeds_the_scripts_verbatim() -> None:
    data = yaml.safe_load((GITOPS / "argocd-cm-patch.yaml").read_text())["data"]
    assert (
        data["resource.customizations.health.loraplane.io_ModelServer"]
        == (GITOPS / "health/modelserver.lua").read_text()
    )
    assert (
        data["resource.customizations.health.loraplane.io_FineTuneJob"]
        == (GITOPS / "health/finetunejob.lua").read_text()
    )


def test_modelserver_health_follows_the_conditions() -> None:
    status, message = health("modelserver.lua", ms_object(ms_status()))
    assert (status, message) == ("Healthy", f"medical=v1@{SHA[:12]}")
    status, message = health("modelserver.lua", ms_object(ms_status(loaded=[])))
    assert status == "Progressing" and message.startswith("LoadingAdapters: medical: loading")
    status, message = health("modelserver.lua", ms_object(ms_status(route=RouteResult(error="connection refused"))))
    assert (status, message) == ("Degraded", "RouterUnavailable: connection refused")
    zero = ms_status(replicas=0, pods=[], replica_urls={})
    assert health("modelserver.lua", ms_object(zero))[0] == "Suspended"
    # Conditions of an older generation do not count: a new commit is Progressing until acted on.
    assert health("modelserver.lua", ms_object(ms_status(), generation=3)) == (
        "Progressing",
        "Waiting for the operator to act on generation 3",
    )
    assert health("modelserver.lua", ms_object(None))[0] == "Progressing"


def ftj_object(conditions: list[dict[str, str]], phase: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "v1", "generation": 1}, "status": {"phase": phase, "conditions": conditions, **status}}


def test_finetunejob_health() -> None:
    ok = [{"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "adapter pvc://s/ns/v1"}]
    passed = [*ok, {"type": "EvaluationPassed", "status": "True", "reason": "GatePassed", "message": "gate passed"}]
    assert health("finetunejob.lua", ftj_object(passed, "Succeeded")) == ("Healthy", "Succeeded: adapter pvc://s/ns/v1")
    gate = [*ok, {"type": "EvaluationPassed", "status": "False", "reason": "GateFailed", "message": "gate failed"}]
    assert health("finetunejob.lua", ftj_object(gate, "Succeeded")) == ("Degraded", "GateFailed: gate failed")
    failed = [{"type": "Failed", "status": "True", "reason": "OutOfMemory", "message": "lower batchSize"}]
    assert health("finetunejob.lua", ftj_object(failed, "Failed")) == ("Degraded", "OutOfMemory: lower batchSize")
    paused = [{"type": "Running", "status": "False", "reason": "Suspended", "message": "paused"}]
    assert health("finetunejob.lua", ftj_object(paused, "Pending"))[0] == "Suspended"
    training = [{"type": "Running", "status": "True", "reason": "Training", "message": "pod x is training"}]
    status, message = health("finetunejob.lua", ftj_object(training, "Training", progress={"summary": "15/60 (25%)"}))
    assert (status, message) == ("Progressing", "Training 15/60 (25%) (Training: pod x is training)")


def test_example_app_is_valid() -> None:
    docs = [yaml.safe_load(p.read_text()) for p in sorted((GITOPS / "apps/medical").glob("*.yaml"))]
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Kustomization", "PersistentVolumeClaim", "FineTuneJob", "ModelServer"}
    FineTuneJob.model_validate(kinds["FineTuneJob"])
    ModelServer.model_validate(kinds["ModelServer"])
    assert finetunejob_problems(kinds["FineTuneJob"]["spec"]) == []
    assert modelserver_problems(kinds["ModelServer"]["spec"]) == []
    claim = kinds["PersistentVolumeClaim"]["metadata"]["name"]
    assert kinds["FineTuneJob"]["spec"]["output"]["storageClaim"] == claim
    selector = kinds["ModelServer"]["spec"]["adapters"][0]["source"]["selector"]["matchLabels"]
    assert selector.items() <= kinds["FineTuneJob"]["metadata"]["labels"].items(), "the selector must pick the run"
    listed = set(kinds["Kustomization"]["resources"])
    assert listed == {p.name for p in (GITOPS / "apps/medical").glob("*.yaml")} - {"kustomization.yaml"}
    app = yaml.safe_load((GITOPS / "application.yaml").read_text())
    assert app["kind"] == "Application" and app["spec"]["source"]["path"] == "examples/gitops/apps/medical"
