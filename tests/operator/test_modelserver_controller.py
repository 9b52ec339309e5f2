"""The ModelServer controller against the real control plane (KWOK pods) and a stub of the router's admin API.

FineTuneJobs really run on KWOK (their pods are finished with a trainer summary, as in the FineTuneJob
controller tests); the operator resolves versions from them, applies the vLLM Deployment, and publishes
routes to `StubRouter`, which records every PUT. The end-to-end tests (test_modelserver_e2e.py) replace the
stub with the real router and real vLLM processes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support.kube import (
    Cluster,
    Kube,
    OperatorProcess,
    add_store,
    assert_applied_child_of,
    new_namespace,
    no_room_for,
    poll,
)
from tests.support.ms_helpers import (
    Ms,
    StubRouter,
    condition,
    modelserver,
    pinned,
    selector,
    swapped_operator,
    versions,
)

SHA = {name: (digit * 64) for name, digit in zip(("v1", "v2", "v3", "b1"), "1234", strict=True)}
MEDICAL = {"loraplane.io/adapter": "medical"}


def version(name: str) -> str:
    return f"medical-{SHA[name][:12]}"


@pytest.fixture(scope="module")
def stub() -> Iterator[StubRouter]:
    with StubRouter() as router:
        yield router


@pytest.fixture(scope="module")
def ms_operator(
    operator: OperatorProcess, stub: StubRouter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    env = {
        "LORAPLANE_OPERATOR_ROUTER_URL": stub.url,
        "LORAPLANE_OPERATOR_ROUTER_ADMIN_KEY": stub.admin_key,
        "LORAPLANE_OPERATOR_ROLLOUT_WAIT_SECONDS": "2",
    }
    yield from swapped_operator(operator, tmp_path_factory.mktemp("ms-operator") / "operator.log", env)


@pytest.fixture
def ms(kube: Kube, ms_operator: OperatorProcess) -> Ms:
    return Ms(kube.c, kube.ns)


def test_children_status_and_route(ms: Ms, stub: StubRouter) -> None:
    ms.finetunejob("v1", SHA["v1"], labels=MEDICAL)
    ms.c.apply(modelserver("qwen", [selector("medical")]), "-n", ms.ns)
    ready = ms.wait_condition("qwen", "Ready", "True", "Serving")
    dep = poll("the vLLM Deployment", lambda: ms.get("deployment", "qwen-vllm"))
    assert_applied_child_of(dep, ready)
    pod_spec = dep["spec"]["template"]["spec"]
    assert (
        pod_spec["securityContext"]["runAsNonRoot"] is True and pod_spec["initContainers"][0]["name"] == "fetch-model"
    )
    assert "--enable-lora" in pod_spec["containers"][0]["command"]
    assert ms.get("service", "qwen-vllm") is not None
    pdb = ms.get("pdb", "qwen-vllm")
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1
    pods = ms.pods("qwen")
    assert len(pods) == 2 and all(p["spec"]["nodeName"].startswith("kwok-gpu-") for p in pods)

    status = ready["status"]
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    (adapter,) = status["adapters"]
    assert adapter["fineTuneJob"] == "v1" and adapter["sha256"] == SHA["v1"] and adapter["served"] is True
    assert adapter["uri"] == f"pvc://store/{ms.ns}/v1" and adapter["version"] == version("v1")
    assert {r["pod"] for r in status["replicaAdapters"]} == {p["metadata"]["name"] for p in pods}
    for cond in ("Ready", "Progressing", "Degraded"):
        assert condition(ready, cond)["observedGeneration"] == 1
    assert condition(ready, "Degraded")["status"] == "False" and condition(ready, "Progressing")["status"] == "False"

    route = stub.route(f"{ms.ns}.qwen")
    assert route is not None and route["base_model"] == f"{ms.ns}.qwen"
    assert sorted(route["replicas"]) == sorted(f"http://{p['status']['podIP']}:8000" for p in pods)
    (model,) = route["adapters"]
    assert model["versions"] == [
        {"name": version("v1"), "path": f"/mnt/adapters/store/{ms.ns}/v1", "sha256": SHA["v1"], "weight": 100}
    ]
    table = ms.c.kubectl("get", "ms", "qwen", "-n", ms.ns).stdout
    assert table.split("\n")[0].split() == ["NAME", "READY", "REPLICAS", "ADAPTERS", "AGE"]
    assert f"medical=v1@{SHA['v1'][:12]}" in table
    assert any(e["reason"] == "AdapterServed" for e in ms.events("qwen"))


def test_promotion_by_selector_only_when_the_gate_passes(ms: Ms, stub: StubRouter) -> None:
    key = f"{ms.ns}.qwen"
    ms.finetunejob("v1", SHA["v1"], labels=MEDICAL)
    ms.c.apply(modelserver("qwen", [selector("medical")], replicas=1, resources={"gpus": 0}), "-n", ms.ns)
    ms.wait_condition("qwen", "Ready", "True")
    # A newer run that fails its gate is never promoted: a reconcile of a new generation (which reads
    # every FineTuneJob afresh) still serves v1.
    ms.finetunejob("b1", SHA["b1"], passed=False, labels=MEDICAL)
    patch = {"spec": {"vllm": {"maxLoras": 5}}}
    ms.c.kubectl("patch", "ms", "qwen", "-n", ms.ns, "--type=merge", "-p", json.dumps(patch))
    obj = ms.wait_condition("qwen", "Ready", "True")
    assert obj["metadata"]["generation"] == 2 and obj["status"]["adapters"][0]["fineTuneJob"] == "v1"
    assert versions(stub.route(key), "medical") == [(version("v1"), 100)]
    # ... a newer one that passes is, in two steps: staged at weight 0 until loaded, then shifted.
    stub.hold.add(version("v3"))
    ms.finetunejob("v3", SHA["v3"], labels=MEDICAL)
    poll("v3 staged", lambda: versions(stub.route(key), "medical") == [(version("v1"), 100), (version("v3"), 0)])
    loading = ms.wait_condition("qwen", "Progressing", "True", "LoadingAdapters")
    assert condition(loading, "Ready")["status"] == "False"
    stub.hold.clear()
    ms.wait(
        "qwen",
        lambda o: o["status"]["adapters"][0]["fineTuneJob"] == "v3" and condition(o, "Ready").get("status") == "True",
        "v3 served",
        timeout=60,
    )
    assert versions(stub.route(key), "medical") == [(version("v3"), 100)]
    published = {name for body in stub.history(key) for name, _ in versions(body, "medical")}
    assert version("b1") not in published, "a run that failed its gate was published"
    events = [(e["reason"], e["message"]) for e in ms.events("qwen")]
    assert ("AdapterPromoted", f"medical: {version('v1')} -> {version('v3')}") in events
    assert ("AdapterServed", f"medical: serving {version('v3')}") in events


def test_rollback_by_pinning_a_named_job(ms: Ms, stub: StubRouter) -> None:
    key = f"{ms.ns}.qwen"
    ms.finetunejob("v1", SHA["v1"], labels=MEDICAL)
    ms.finetunejob("v2", SHA["v2"], labels=MEDICAL)
    ms.c.apply(modelserver("qwen", [selector("medical")], replicas=1, resources={"gpus": 0}), "-n", ms.ns)
    ms.wait("qwen", lambda o: (o.get("status") or {}).get("adapters", [{}])[0].get("fineTuneJob") == "v2", "v2")
    # The git revert: the same ModelServer pinning v1.
    ms.c.apply(modelserver("qwen", [pinned("medical", "v1")], replicas=1, resources={"gpus": 0}), "-n", ms.ns)
    obj = ms.wait_condition("qwen", "Ready", "True")
    assert obj["status"]["adapters"][0]["fineTuneJob"] == "v1" and obj["metadata"]["generation"] == 2
    assert versions(stub.route(key), "medical") == [(version("v1"), 100)]
    # Pinning a run that does not exist is drift: the previous version keeps serving, Degraded says why.
    ms.c.apply(modelserver("qwen", [pinned("medical", "v9")], replicas=1, resources={"gpus": 0}), "-n", ms.ns)
    obj = ms.wait_condition("qwen", "Degraded", "True", "FineTuneJobNotFound")
    assert "spec.adapters[0].source.fineTuneJob" in condition(obj, "Degraded")["message"]
    assert obj["status"]["adapters"][0]["fineTuneJob"] == "v1" and condition(obj, "Ready")["status"] == "False"
    assert versions(stub.route(key), "medical") == [(version("v1"), 100)]


def test_canary_split_is_published_with_weights(ms: Ms, stub: StubRouter) -> None:
    ms.finetunejob("v1", SHA["v1"])
    ms.finetunejob("v2", SHA["v2"])
    adapter = {**pinned("medical", "v1"), "canary": {"source": {"fineTuneJob": "v2"}, "weight": 25}}
    ms.c.apply(modelserver("qwen", [adapter], replicas=1, resources={"gpus": 0}), "-n", ms.ns)
    obj = ms.wait_condition("qwen", "Ready", "True")
    assert versions(stub.route(f"{ms.ns}.qwen"), "medical") == [(version("v1"), 75), (version("v2"), 25)]
    resolved = obj["status"]["adapters"][0]
    assert (resolved["canaryFineTuneJob"], resolved["canaryWeight"]) == ("v2", 25)
    assert "canary v2@" in obj["status"]["adapterSummary"]


def test_cross_namespace_adapters_refused_unless_allowed(ms: Ms, stub: StubRouter, installed: Cluster) -> None:
    other = new_namespace(installed)
    try:
        add_store(installed, other)
        Ms(installed, other).finetunejob("v1", SHA["v1"])
        adapters = [pinned("medical", "v1", namespace=other)]
        ms.c.apply(modelserver("qwen", adapters, replicas=1, resources={"gpus": 0}), "-n", ms.ns)
        obj = ms.wait_condition("qwen", "Degraded", "True", "InvalidSpec")
        assert condition(obj, "Accepted")["status"] == "False" and condition(obj, "Failed")["status"] == "True"
        assert "spec.adapters[0].source.namespace" in condition(obj, "Degraded")["message"]
        assert stub.route(f"{ms.ns}.qwen") is None and ms.get("deployment", "qwen-vllm") is None
        warning = poll("a Warning Event", lambda: [e for e in ms.events("qwen") if e["reason"] == "InvalidSpec"])
        assert warning[0]["type"] == "Warning"
        allowed = modelserver("qwen", adapters, replicas=1, resources={"gpus": 0}, allowedNamespaces=[other])
        ms.c.apply(allowed, "-n", ms.ns)
        # allowed, but the run's adapter is on a claim of the other namespace: no pod here can mount it
        obj = ms.wait_condition("qwen", "Degraded", "True", "UnsupportedAdapterUri")
        assert f"claim store in namespace {other}" in condition(obj, "Degraded")["message"]
        # a run there that pushed its adapter to a registry, served through the adapter agent
        pushed = f"oci://registry.example:5000/{other}/medical:v2@sha256:{'9' * 64}"
        Ms(installed, other).finetunejob("v2", SHA["v2"], oci_uri=pushed)
        agent = modelserver(
            "qwen",
            [pinned("medical", "v2", namespace=other)],
            replicas=1,
            resources={"gpus": 0},
            allowedNamespaces=[other],
            adapterAgent={"plainHttp": True},
        )
        ms.c.apply(agent, "-n", ms.ns)
        obj = ms.wait_condition("qwen", "Ready", "True")
        assert obj["status"]["adapters"][0]["fineTuneJob"] == f"{other}/v2"
        route = stub.route(f"{ms.ns}.qwen")
        assert route is not None and route["agent_port"] == 8001
        (model,) = route["adapters"]
        assert model["versions"][0]["path"] == pushed
        pod = ms.get("deployment", "qwen-vllm")["spec"]["template"]["spec"]  # type: ignore[index]
        assert [c["name"] for c in pod["containers"]] == ["vllm", "adapter-agent"]
    finally:
        installed.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_public_names_cannot_collide_across_namespaces(ms: Ms, stub: StubRouter, installed: Cluster) -> None:
    other = new_namespace(installed)
    try:
        ms.c.apply(
            modelserver(
                "first", [{"name": "shared", "source": {"uri": "pvc://store/a/b"}}], replicas=1, resources={"gpus": 0}
            ),
            "-n",
            ms.ns,
        )
        ms.wait_condition("first", "Ready", "True")
        second = Ms(installed, other)
        installed.apply(
            modelserver(
                "second", [{"name": "shared", "source": {"uri": "pvc://store/c/d"}}], replicas=1, resources={"gpus": 0}
            ),
            "-n",
            other,
        )
        obj = second.wait_condition("second", "Degraded", "True", "PublicNameTaken")
        assert f"{ms.ns}/first" in condition(obj, "Degraded")["message"]
        assert versions(stub.route(f"{other}.second"), "shared") == []
        assert versions(stub.route(f"{ms.ns}.first"), "shared") != []
    finally:
        installed.kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_router_problems_are_degraded_and_recover(ms: Ms, stub: StubRouter) -> None:
    ms.finetunejob("v1", SHA["v1"])
    stub.refuse[version("v1")] = "adapter_model.safetensors: sha256 mismatch"
    try:
        ms.c.apply(modelserver("qwen", [pinned("medical", "v1")], replicas=1, resources={"gpus": 0}), "-n", ms.ns)
        obj = ms.wait_condition("qwen", "Degraded", "True", "AdapterLoadFailed")
        assert "sha256 mismatch" in condition(obj, "Degraded")["message"]
        stub.refuse.clear()
        ms.wait_condition("qwen", "Ready", "True", timeout=60)  # the periodic resync notices
        stub.fail_with = 503
        obj = ms.wait_condition("qwen", "Degraded", "True", "RouterUnavailable", timeout=60)
        assert condition(obj, "Ready")["status"] == "False"
    finally:
        stub.fail_with = None
        stub.refuse.clear()
    ms.wait_condition("qwen", "Ready", "True", timeout=60)


def test_scaling_and_deletion_follow_the_spec(ms: Ms, stub: StubRouter) -> None:
    key = f"{ms.ns}.qwen"
    ms.finetunejob("v1", SHA["v1"])
    ms.c.apply(modelserver("qwen", [pinned("medical", "v1")], replicas=1, resources={"gpus": 0}), "-n", ms.ns)
    ms.wait_condition("qwen", "Ready", "True")
    ms.c.kubectl("patch", "ms", "qwen", "-n", ms.ns, "--type=merge", "-p", json.dumps({"spec": {"replicas": 3}}))
    obj = ms.wait(
        "qwen",
        lambda o: o["status"].get("readyReplicas") == 3 and condition(o, "Ready").get("status") == "True",
        "3 ready",
    )
    assert condition(obj, "Ready")["observedGeneration"] == 2
    poll("3 replicas routed", lambda: len((stub.route(key) or {}).get("replicas", [])) == 3)
    # kopf keeps no state on the object: only our finalizer (the route goes first), none of kopf's annotations.
    meta = obj["metadata"]
    assert meta.get("finalizers") == ["loraplane.io/route-cleanup"]
    assert [a for a in meta.get("annotations") or {} if a.startswith(("loraplane.io/", "kopf."))] == []
    ms.c.kubectl("delete", "ms", "qwen", "-n", ms.ns, "--wait=true", "--timeout=60s")
    assert key in stub.deletes and stub.route(key) is None
    poll("the Deployment garbage-collected", lambda: ms.get("deployment", "qwen-vllm") is None, timeout=120)


def test_leftovers_of_kopfs_handlers_go_away(ms: Ms, stub: StubRouter) -> None:
    """An object from an earlier version (kopf's finalizer and diffbase annotation) is migrated by a round."""
    old = modelserver("legacy", [], replicas=1, resources={"gpus": 0})
    old["metadata"]["annotations"] = {"loraplane.io/last-handled-configuration": '{"spec": {}}'}
    old["metadata"]["finalizers"] = ["loraplane.io/finalizer"]
    ms.c.apply(old, "-n", ms.ns)
    obj = ms.wait(
        "legacy",
        lambda o: (
            o["metadata"].get("finalizers") == ["loraplane.io/route-cleanup"]
            and "loraplane.io/last-handled-configuration" not in (o["metadata"].get("annotations") or {})
        ),
        "kopf's finalizer and annotation gone, ours in place",
    )
    assert obj["metadata"]["generation"] == 1
    ms.c.kubectl("delete", "ms", "legacy", "-n", ms.ns, "--wait=true", "--timeout=60s")
    assert f"{ms.ns}.legacy" in stub.deletes


def test_a_write_the_api_server_keeps_refusing_shows_in_kubectl_describe_and_clears(ms: Ms, stub: StubRouter) -> None:
    """A persistent failure (a quota that allows no PodDisruptionBudget) is Degraded=True ReconcileFailed."""
    ms.c.apply(no_room_for("count/poddisruptionbudgets.policy"), "-n", ms.ns)
    adapters = [{"name": "medical", "source": {"uri": "pvc://store/a/b"}}]
    ms.c.apply(modelserver("qwen", adapters, replicas=1, resources={"gpus": 0}), "-n", ms.ns)
    ms.wait_condition("qwen", "Degraded", "True", "ReconcileFailed")
    described = ms.c.kubectl("describe", "ms", "qwen", "-n", ms.ns).stdout
    assert "ReconcileFailed" in described, described
    assert 'poddisruptionbudgets.policy "qwen-vllm" is forbidden' in described, described
    ms.c.kubectl("delete", "resourcequota", "no-poddisruptionbudgets", "-n", ms.ns)
    obj = ms.wait_condition("qwen", "Ready", "True", "Serving", timeout=120)
    assert condition(obj, "Degraded")["reason"] == "Healthy"
