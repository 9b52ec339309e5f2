"""ModelServer controller, pure parts: builders, version resolution, route steps, status; the router client."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from loraplane.api.conditions import SourceReason, get_condition
from loraplane.api.modelserver import ModelServerSpec, ModelServerStatus, ResolvedAdapter
from loraplane.api.route import AdapterVersion, PublicModel, ServerRoute, ServerStatus
from loraplane.operator.modelserver import builders as msb
from loraplane.operator.modelserver.publish import ROLLOUT_POLL_SECONDS, RolloutPacer, publish
from loraplane.operator.modelserver.resolve import (
    AdapterPlan,
    Claim,
    JobInfo,
    Version,
    adapter_path,
    name_claims,
    resolve_all,
    store_claims,
)
from loraplane.operator.modelserver.route import desired_route, next_step, same_route
from loraplane.operator.modelserver.status import (
    RouteResult,
    ServerSnapshot,
    modelserver_status,
    summary,
    transitions,
)
from loraplane.operator.modelserver.validation import modelserver_problems
from loraplane.operator.names import ANNOTATION_ENDPOINT
from loraplane.operator.owner import Owner
from loraplane.operator.pods import restricted_container_security, restricted_pod_security
from loraplane.operator.router_client import RouterClient, RouterRejected, RouterUnavailable
from loraplane.operator.settings import OperatorSettings
from loraplane.serving.vllm_args import HEALTH_PATH
from tests.serving.fixtures import ServeRouter
from tests.support.ms_helpers import StubRouter

SETTINGS = OperatorSettings(priority=1, trainer_image="trainer:test")
OWNER = Owner(kind="ModelServer", name="qwen", namespace="team-a", uid="u-9")
SHA = {n: (c * 64) for n, c in zip(("v1", "v2", "v3", "bad", "run"), "abcde", strict=True)}
T0 = "2025-01-01T00:00:00Z"
T1 = "2025-01-01T00:05:00Z"
OCI = {
    n: f"oci://registry.example:5000/adapters/{n}:{n}@sha256:{c * 64}" for n, c in zip(("v1", "v2"), "12", strict=True)
}


def spec(**over: Any) -> ModelServerSpec:
    base: dict[str, Any] = {
        "baseModel": {"uri": "hf://Qwen/Qwen2.5-7B-Instruct@abc", "tokenSecretRef": {"name": "hf", "key": "token"}},
        "replicas": 2,
        "resources": {
            "gpus": 1,
            "memory": "32Gi",
            "nodeSelector": {"gpu": "l4"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
        "vllm": {"maxLoras": 4, "maxLoraRank": 16},
        "adapters": [{"name": "medical", "source": {"selector": {"matchLabels": {"loraplane.io/adapter": "medical"}}}}],
    }
    base.update(over)
    return ModelServerSpec.model_validate(base)


def job(
    name: str,
    *,
    ns: str = "team-a",
    created: str = T0,
    state: str = "Succeeded",
    gate: bool = True,
    labels: dict[str, str] | None = None,
    oci: bool = False,
    s3: bool = False,
) -> JobInfo:
    done = state == "Succeeded"
    return JobInfo(
        namespace=ns,
        name=name,
        created=created,
        labels=labels or {"loraplane.io/adapter": "medical"},
        phase=state,
        succeeded=done,
        failed=state == "Failed",
        gate_passed=gate,
        uri=f"pvc://store/{ns}/{name}" if done else "",
        sha256=SHA.get(name, "f" * 64) if done else "",
        oci_uri=OCI.get(name, "") if done and oci else "",
        s3_uri=f"s3://adapters/runs/{name}@sha256:{SHA.get(name, 'f' * 64)}" if done and s3 else "",
    )


# ----------------------------------------------------------------------------------------------------- builders


def test_deployment_runs_vllm_from_the_serving_builder_with_restricted_security() -> None:
    dep = msb.deployment(OWNER, spec(), SETTINGS, ["store"])
    assert dep["metadata"]["name"] == "qwen-vllm" and dep["metadata"]["namespace"] == "team-a"
    assert dep["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "loraplane.io/v1alpha1",
            "kind": "ModelServer",
            "name": "qwen",
            "uid": "u-9",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["selector"] == {
        "matchLabels": {"loraplane.io/modelserver": "qwen", "app.kubernetes.io/component": "vllm"}
    }
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"] == restricted_pod_security()
    assert pod["automountServiceAccountToken"] is False
    assert pod["nodeSelector"] == {"gpu": "l4"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    launch = msb.vllm_launch(OWNER, spec(), SETTINGS)
    assert pod["terminationGracePeriodSeconds"] == launch.termination_grace_period_seconds >= 30
    vllm, _agent = pod["containers"]
    assert vllm["command"] == list(launch.argv)
    argv = vllm["command"]
    for flag, value in [
        ("--model", "/var/cache/loraplane/model"),
        ("--served-model-name", "team-a.qwen"),
        ("--host", "0.0.0.0"),
        ("--port", "8000"),
        ("--max-loras", "4"),
        ("--max-lora-rank", "16"),
    ]:
        assert argv[argv.index(flag) + 1] == value, flag
    assert "--enable-lora" in argv
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True" and env["HF_HUB_OFFLINE"] == "1"
    assert "LORAPLANE_HUB_TOKEN" not in env, "the hub token only reaches the container that downloads"
    assert vllm["readinessProbe"]["httpGet"] == {"path": HEALTH_PATH, "port": 8000}
    assert vllm["startupProbe"]["failureThreshold"] * vllm["startupProbe"]["periodSeconds"] >= 300
    assert vllm["lifecycle"]["preStop"]["exec"]["command"][-1].startswith("sleep")
    assert vllm["securityContext"] == restricted_container_security()  # pinned in test_builders.py
    assert vllm["resources"] == {
        "requests": {"nvidia.com/gpu": "1", "memory": "32Gi"},
        "limits": {"nvidia.com/gpu": "1", "memory": "32Gi"},
    }
    mounts = {m["mountPath"]: m for m in vllm["volumeMounts"]}
    assert mounts["/mnt/adapters/store"]["readOnly"] is True
    assert mounts["/var/cache/loraplane"]["readOnly"] is True and "/dev/shm" in mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/mnt/adapters/store"]["name"]]["persistentVolumeClaim"] == {
        "claimName": "store",
        "readOnly": True,
    }


def test_cpu_nodes_get_the_operators_vllm_image_and_a_profile_reachable_on_the_pod_ip() -> None:
    """The defaults a CPU cluster sets once (the local overlay), instead of every ModelServer naming them."""
    cpu = OperatorSettings(
        priority=1,
        trainer_image="trainer:test",
        vllm_image="registry.local/vllm-cpu:1",
        vllm_profile="cpu",
        image_pull_policy="Always",
    )
    pod = msb.deployment(OWNER, spec(), cpu, ["store"])["spec"]["template"]["spec"]
    vllm, _agent = pod["containers"]
    (fetch,) = pod["initContainers"]
    assert vllm["image"] == "registry.local/vllm-cpu:1"
    assert vllm["imagePullPolicy"] == fetch["imagePullPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    assert "VLLM_HOST_IP" not in env, "a loopback VLLM_HOST_IP is for local mode only"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert vllm["command"][vllm["command"].index("--host") + 1] == "0.0.0.0"
    assert vllm["lifecycle"]["preStop"]["exec"]["command"][-1] == "sleep 5"
    named = spec()
    named.vllm.image = "mine/vllm:2"
    pod = msb.deployment(OWNER, named, cpu, ["store"])["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "mine/vllm:2", "spec.vllm.image wins over the operator's default"
    assert msb.deployment(OWNER, spec(), SETTINGS, [])["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "vllm/vllm-openai:v0.11.0"
    )


def test_base_model_is_fetched_by_an_init_container_into_the_cache() -> None:
    pod = msb.deployment(OWNER, spec(), SETTINGS, [])["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["name"] == "fetch-model" and fetch["image"] == "trainer:test"
    env = {e["name"]: e for e in fetch["env"]}
    assert json.loads(env["LORAPLANE_BASE_MODEL"]["value"])["uri"] == "hf://Qwen/Qwen2.5-7B-Instruct@abc"
    assert env["LORAPLANE_HUB_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert {"name": "cache", "mountPath": "/var/cache/loraplane"} in fetch["volumeMounts"]
    # The program is a module of the trainer image, run for real in tests/trainer/test_fetch.py.
    assert fetch["command"] == ["python", "-m", "loraplane.trainer.fetch"]
    assert fetch["securityContext"]["runAsNonRoot"] is True
    pvc = msb.deployment(OWNER, spec(baseModel={"uri": "pvc://models/qwen"}), SETTINGS, [])["spec"]["template"]["spec"]
    base = next(v for v in pvc["volumes"] if v["name"] == "base-model")
    assert base["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert {"name": "base-model", "mountPath": "/mnt/pvc/models", "readOnly": True} in pvc["initContainers"][0][
        "volumeMounts"
    ]


def test_pod_template_does_not_depend_on_adapter_versions() -> None:
    """A new version is loaded at runtime: the Deployment (hence the pods) must not change with it."""
    s = spec()
    v2 = [AdapterPlan("medical", Version("pvc://store/team-a/v2", SHA["v2"]))]
    v3 = [AdapterPlan("medical", Version("pvc://store/team-a/v3", SHA["v3"]))]
    assert msb.deployment(OWNER, s, SETTINGS, store_claims(v2)) == msb.deployment(OWNER, s, SETTINGS, store_claims(v3))


def test_the_adapter_agent_runs_next_to_vllm_and_alone_mounts_the_registry_login() -> None:
    default = msb.deployment(OWNER, spec(), SETTINGS, [])["spec"]["template"]["spec"]
    assert [c["name"] for c in default["containers"]] == ["vllm", "adapter-agent"], "every pod has its agent"
    assert {v["name"]: v for v in default["volumes"]}["adapters"]["emptyDir"] == {"sizeLimit": "2Gi"}
    agent_spec = spec(adapterAgent={"credentialsSecret": "registry-login", "plainHttp": True, "cacheSize": "1Gi"})
    pod = msb.deployment(OWNER, agent_spec, SETTINGS, [])["spec"]["template"]["spec"]
    vllm, agent = pod["containers"]
    assert agent["name"] == "adapter-agent" and agent["image"] == SETTINGS.agent_image
    assert agent["command"] == ["python", "-m", "loraplane.serving.agent"]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["LORAPLANE_AGENT_PORT"] == "8001" and env["LORAPLANE_AGENT_VLLM_URL"] == "http://127.0.0.1:8000"
    assert env["LORAPLANE_AGENT_BASE_MODEL"] == "hf://Qwen/Qwen2.5-7B-Instruct@abc"
    assert env["LORAPLANE_AGENT_MAX_LORA_RANK"] == "16" and env["LORAPLANE_AGENT_PLAIN_HTTP"] == "true"
    assert env["LORAPLANE_AGENT_CACHE_LIMIT_BYTES"] == str(int(0.8 * 1024**3)), "evicts before the kubelet would"
    assert env["DOCKER_CONFIG"] == "/etc/loraplane/registry"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["adapters"] == {"name": "adapters", "emptyDir": {"sizeLimit": "1Gi"}}
    assert volumes["registry-auth"]["secret"]["secretName"] == "registry-login"
    cache = SETTINGS.agent_cache_dir
    assert {"name": "adapters", "mountPath": cache} in agent["volumeMounts"]
    assert {"name": "adapters", "mountPath": cache, "readOnly": True} in vllm["volumeMounts"], "vLLM reads the copies"
    assert not [m for m in vllm["volumeMounts"] if m["name"] == "registry-auth"], "the login is the agent's alone"
    assert not [e for e in vllm["env"] if e["name"] == "DOCKER_CONFIG"]
    assert agent["securityContext"] == restricted_container_security()
    assert agent["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "agent"}
    without_login = msb.deployment(OWNER, spec(), SETTINGS, [])["spec"]["template"]["spec"]
    assert "registry-auth" not in {v["name"] for v in without_login["volumes"]}
    # a version on a claim: vLLM loads it, the agent verifies it first; both see it read-only at the same path
    with_claim = msb.deployment(OWNER, spec(), SETTINGS, ["runs"])["spec"]["template"]["spec"]
    store = {"name": "store-0", "mountPath": f"{SETTINGS.adapter_mount_root.rstrip('/')}/runs", "readOnly": True}
    assert all(store in c["volumeMounts"] for c in with_claim["containers"])


def test_service_and_disruption_budget() -> None:
    svc = msb.service(OWNER, SETTINGS)
    assert svc["metadata"]["name"] == "qwen-vllm" and svc["spec"]["selector"] == msb.selector_labels("qwen")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    pdb = msb.disruption_budget(OWNER)
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": msb.selector_labels("qwen")},
    }
    assert [c["kind"] for c in msb.children(OWNER, spec(), SETTINGS, [])] == [
        "Service",
        "PodDisruptionBudget",
        "Deployment",
    ]


def test_replica_url_from_pod_ip_or_trusted_annotation() -> None:
    pod = {
        "metadata": {"annotations": {ANNOTATION_ENDPOINT: "http://127.0.0.1:9001/"}},
        "status": {"podIP": "10.244.0.7"},
    }
    assert msb.replica_url(pod, SETTINGS) == "http://10.244.0.7:8000", "the annotation is ignored unless trusted"
    trusting = OperatorSettings(priority=1, trust_endpoint_annotation=True)
    assert msb.replica_url(pod, trusting) == "http://127.0.0.1:9001"
    assert msb.replica_url({"metadata": {}, "status": {"podIP": "10.244.0.7"}}, trusting) is None, "not pointed yet"
    assert msb.replica_url({"metadata": {}, "status": {}}, SETTINGS) is None


# ----------------------------------------------------------------------------------------------------- resolution


def test_selector_picks_the_newest_run_that_succeeded_and_passed_its_gate() -> None:
    jobs = [
        job("v1", created="2025-01-01T00:00:00Z"),
        job("v2", created="2025-01-02T00:00:00Z"),
        job("bad", created="2025-01-03T00:00:00Z", gate=False),  # newer, but failed its gate
        job("run", created="2025-01-04T00:00:00Z", state="Training"),  # newer, still training
        job("v9", created="2025-01-05T00:00:00Z", labels={"loraplane.io/adapter": "finance"}),  # other labels
        job("v8", ns="team-b", created="2025-01-06T00:00:00Z"),  # other namespace
    ]
    (plan,) = resolve_all(spec(), namespace="team-a", jobs=jobs)
    assert plan.stable == Version("pvc://store/team-a/v2", SHA["v2"], "v2")
    assert plan.issues == ()
    assert plan.stable.lora_name("medical") == "medical-" + SHA["v2"][:12]


def test_selector_without_a_passing_run_waits_or_degrades() -> None:
    (waiting,) = resolve_all(spec(), namespace="team-a", jobs=[job("run", state="Training")])
    assert waiting.stable is None and waiting.issues[0].severity == "Progressing"
    (failing,) = resolve_all(spec(), namespace="team-a", jobs=[job("bad", gate=False)])
    assert failing.issues[0].severity == "Degraded" and failing.issues[0].reason == SourceReason.NOTHING_PASSED
    (nothing,) = resolve_all(spec(), namespace="team-a", jobs=[])
    assert (
        nothing.issues[0].reason == SourceReason.NO_MATCH
        and "loraplane.io/adapter=medical" in nothing.issues[0].message
    )


@pytest.mark.parametrize(
    ("jobs", "severity", "reason"),
    [
        ([], "Degraded", SourceReason.NOT_FOUND),
        ([job("v3", state="Training")], "Progressing", SourceReason.RUNNING),
        ([job("v3", state="Failed")], "Degraded", SourceReason.FAILED),
        ([job("v3", gate=False)], "Degraded", SourceReason.GATE_FAILED),
    ],
)
def test_a_pinned_run_must_have_succeeded_and_passed(jobs: list[JobInfo], severity: str, reason: str) -> None:
    s = spec(adapters=[{"name": "medical", "source": {"fineTuneJob": "v3"}}])
    previous = [ResolvedAdapter(name="medical", fine_tune_job="v1", uri="pvc://store/team-a/v1", sha256=SHA["v1"])]
    (plan,) = resolve_all(s, namespace="team-a", jobs=jobs, previous=previous)
    assert [(i.severity, i.reason) for i in plan.issues] == [(severity, reason)]
    assert "spec.adapters[0].source.fineTuneJob" in plan.issues[0].message
    # The version served before keeps serving, and the status says so.
    assert plan.stable == Version("pvc://store/team-a/v1", SHA["v1"], "v1") and plan.fallback


def test_pinning_an_older_run_rolls_back() -> None:
    s = spec(adapters=[{"name": "medical", "source": {"fineTuneJob": "v1"}}])
    (plan,) = resolve_all(s, namespace="team-a", jobs=[job("v1"), job("v2", created=T1)])
    assert plan.stable is not None and plan.stable.fine_tune_job == "v1" and not plan.fallback


def test_cross_namespace_sources_need_allowed_namespaces() -> None:
    adapters = [{"name": "medical", "source": {"fineTuneJob": "v1", "namespace": "team-b"}}]
    refused = spec(adapters=adapters)
    assert modelserver_problems(refused.to_k8s())  # admission refuses it ...
    (plan,) = resolve_all(refused, namespace="team-a", jobs=[job("v1", ns="team-b")])
    assert plan.stable is None and plan.issues[0].reason == SourceReason.NAMESPACE_NOT_ALLOWED  # ... and resolution too
    allowed = spec(adapters=adapters, allowedNamespaces=["team-b"])
    # allowed, but its pvc:// copy is on a claim of team-b, which team-a's pods cannot mount
    (plan,) = resolve_all(allowed, namespace="team-a", jobs=[job("v1", ns="team-b")])
    assert plan.stable is None and plan.issues[0].reason == SourceReason.UNSUPPORTED_URI
    assert "claim store in namespace team-b" in plan.issues[0].message and "push it to a registry" in str(plan.issues)
    # pushed to a registry and served through the agent in each pod: any namespace
    (plan,) = resolve_all(allowed, namespace="team-a", jobs=[job("v1", ns="team-b", oci=True)])
    assert plan.stable == Version(OCI["v1"], SHA["v1"], "team-b/v1") and not plan.issues


def test_a_pushed_run_is_served_from_the_registry() -> None:
    s = spec(adapters=[{"name": "medical", "source": {"fineTuneJob": "v1"}}])
    (plan,) = resolve_all(s, namespace="team-a", jobs=[job("v1", oci=True)])
    assert plan.stable == Version(OCI["v1"], SHA["v1"], "v1")
    assert store_claims([plan]) == [], "nothing to mount"
    # a run that pushed nothing is still served from its claim in the server's own namespace, under the same
    # name on vLLM (same sha256, whichever store it comes from)
    (own,) = resolve_all(s, namespace="team-a", jobs=[job("v1")])
    assert own.stable is not None and own.stable.uri == "pvc://store/team-a/v1"
    assert own.stable.lora_name("medical") == plan.stable.lora_name("medical")
    route = desired_route("team-a.qwen", ["http://10.0.0.1:8000"], [plan], "/mnt/adapters", 8001)
    assert route.agent_port == 8001 and route.adapters[0].versions[0].path == OCI["v1"]
    assert not same_route(route, desired_route("team-a.qwen", ["http://10.0.0.1:8000"], [plan], "/mnt/adapters"))


def test_an_oci_source_is_pinned_by_digest() -> None:
    adapters = [{"name": "medical", "source": {"uri": OCI["v1"]}}]
    pinned = {**spec().to_k8s(), "adapters": adapters}
    assert not modelserver_problems(pinned)
    tagged = {**pinned, "adapters": [{"name": "medical", "source": {"uri": "oci://r.io/a/b:v1"}}]}
    (problem,) = modelserver_problems(tagged)
    assert "spec.adapters[0].source.uri" in str(problem), "a tag can move: a version is pinned by digest"
    (plan,) = resolve_all(spec(adapters=adapters), namespace="team-a", jobs=[])
    assert plan.stable == Version(OCI["v1"]) and not plan.issues


def test_an_s3_version_is_pinned_by_the_adapter_sha256_and_pulled_by_the_agent_alone() -> None:
    pinned_uri = f"s3://adapters/runs/v1@sha256:{SHA['v1']}"
    direct = spec(adapters=[{"name": "medical", "source": {"uri": pinned_uri}}])
    (plan,) = resolve_all(direct, namespace="team-a", jobs=[])
    # the pin is the adapter sha256: the same name on vLLM as the FineTuneJob's version, and the agent's check
    assert plan.stable == Version(pinned_uri, SHA["v1"]) and not plan.issues
    (pushed,) = resolve_all(
        spec(adapters=[{"name": "medical", "source": {"fineTuneJob": "v1"}}]),
        namespace="team-a",
        jobs=[job("v1", s3=True)],
    )
    assert pushed.stable == Version(pinned_uri, SHA["v1"], "v1") and store_claims([pushed]) == []
    assert pushed.stable.lora_name("medical") == plan.stable.lora_name("medical")
    loose = {**spec().to_k8s(), "adapters": [{"name": "medical", "source": {"uri": "s3://adapters/runs/v1"}}]}
    (problem,) = modelserver_problems(loose)
    assert "spec.adapters[0].source.uri" in str(problem), "an object can be replaced: a version is pinned"
    for evil in ("s3://adapters/../v1@sha256:" + SHA["v1"], "s3://adapters/a//b@sha256:" + SHA["v1"]):
        bad = {**spec().to_k8s(), "adapters": [{"name": "medical", "source": {"uri": evil}}]}
        assert modelserver_problems(bad), evil
    # the store's endpoint and login reach the agent container alone, as a file and plain variables
    s3 = {"endpoint": "http://versitygw.storage:7070", "region": "eu-west-1", "credentialsSecret": "s3-login"}
    pod = msb.deployment(OWNER, spec(adapterAgent={"s3": s3}), SETTINGS, [])["spec"]["template"]["spec"]
    vllm, agent = pod["containers"]
    env = {e["name"]: e["value"] for e in agent["env"]}
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/etc/loraplane/s3/credentials"
    assert env["AWS_ENDPOINT_URL_S3"] == "http://versitygw.storage:7070" and env["AWS_REGION"] == "eu-west-1"
    assert {"name": "s3-auth", "mountPath": "/etc/loraplane/s3", "readOnly": True} in agent["volumeMounts"]
    volume = {v["name"]: v for v in pod["volumes"]}["s3-auth"]
    assert volume["secret"] == {"secretName": "s3-login", "items": [{"key": "credentials", "path": "credentials"}]}
    assert not [m for m in vllm["volumeMounts"] if m["name"] == "s3-auth"], "the login is the agent's alone"
    assert not [e for e in vllm["env"] if e["name"].startswith("AWS_")]
    bad_endpoint = {**spec().to_k8s(), "adapterAgent": {"s3": {"endpoint": "ftp://x"}}}
    (problem,) = modelserver_problems(bad_endpoint)
    assert "spec.adapterAgent.s3.endpoint" in str(problem)


def test_public_names_belong_to_the_oldest_modelserver() -> None:
    older, newer = Claim(T0, "team-b", "other"), Claim(T1, "team-a", "qwen")
    claims = {"medical": [older, newer]}
    (plan,) = resolve_all(spec(), namespace="team-a", jobs=[job("v1")], claims=claims, me=newer)
    assert plan.blocked and plan.versions == [] and plan.issues[0].reason == SourceReason.NAME_TAKEN
    assert "team-b/other" in plan.issues[0].message
    (plan,) = resolve_all(spec(), namespace="team-b", jobs=[job("v1", ns="team-b")], claims=claims, me=older)
    assert not plan.blocked and plan.versions


def test_a_server_that_holds_a_public_name_keeps_it() -> None:
    """Creation timestamps have one-second resolution: a live server never loses its name to a tie."""
    meta = {"namespace": "team-b", "name": "other", "creationTimestamp": T1}
    serving = name_claims(
        meta, {"adapters": [{"name": "medical"}]}, {"adapters": [{"name": "medical", "uri": "pvc://s/v1"}]}
    )
    newcomer = Claim(T0, "team-a", "qwen")  # older by the clock, or equal and first by namespace
    claims = {"medical": [newcomer, serving["medical"]]}
    (plan,) = resolve_all(spec(), namespace="team-a", jobs=[job("v1")], claims=claims, me=newcomer)
    assert plan.blocked and "team-b/other" in plan.issues[0].message
    # the holder's own claim as reconcile builds it (identity only) still recognises itself
    (plan,) = resolve_all(
        spec(), namespace="team-b", jobs=[job("v1", ns="team-b")], claims=claims, me=Claim(T1, "team-b", "other")
    )
    assert not plan.blocked
    assert name_claims({**meta, "deletionTimestamp": T1}, {"adapters": [{"name": "medical"}]}, {}) == {}


def test_canary_weights_and_degenerate_canaries() -> None:
    s = spec(
        adapters=[
            {
                "name": "medical",
                "source": {"fineTuneJob": "v1"},
                "canary": {"source": {"fineTuneJob": "v2"}, "weight": 20},
            }
        ]
    )
    (plan,) = resolve_all(s, namespace="team-a", jobs=[job("v1"), job("v2")])
    assert [(v.fine_tune_job, w) for v, w in plan.versions] == [("v1", 80), ("v2", 20)]
    assert AdapterPlan("m", Version("pvc://a/1", SHA["v1"]), Version("pvc://a/2", SHA["v2"]), 0).versions == [
        (Version("pvc://a/1", SHA["v1"]), 100)
    ]
    same = AdapterPlan("m", Version("pvc://a/1", SHA["v1"]), Version("pvc://a/1b", SHA["v1"]), 50)
    assert len(same.versions) == 1
    (missing,) = resolve_all(
        spec(adapters=[{**s.adapters[0].to_k8s(), "canary": {"source": {"fineTuneJob": "nope"}, "weight": 20}}]),
        namespace="team-a",
        jobs=[job("v1")],
    )
    assert [(v.fine_tune_job, w) for v, w in missing.versions] == [("v1", 100)]
    assert "canary.source.fineTuneJob" in missing.issues[0].message


def test_uri_sources_and_paths() -> None:
    s = spec(
        adapters=[
            {"name": "legal", "source": {"uri": "pvc://store/team-a/legal-v1"}},
            {"name": "hub", "source": {"uri": "hf://org/adapter"}},
        ]
    )
    legal, hub = resolve_all(s, namespace="team-a", jobs=[])
    assert (
        legal.stable is not None and legal.stable.sha256 == "" and legal.stable.lora_name("legal").startswith("legal-")
    )
    assert hub.stable is None and hub.issues[0].reason == SourceReason.UNSUPPORTED_URI
    assert adapter_path("pvc://store/team-a/legal-v1", "/mnt/adapters") == "/mnt/adapters/store/team-a/legal-v1"
    assert adapter_path("file:///data/a", "/mnt/adapters") == "/data/a"
    assert store_claims([legal]) == ["store"]


def test_job_info_reads_the_finetunejob_status() -> None:
    obj = {
        "metadata": {"namespace": "team-a", "name": "v2", "creationTimestamp": T0, "labels": {"a": "b"}},
        "status": {
            "phase": "Succeeded",
            "conditions": [
                {"type": "Succeeded", "status": "True"},
                {"type": "EvaluationPassed", "status": "False"},
            ],
            "adapter": {"uri": "pvc://store/team-a/v2", "sha256": SHA["v2"]},
            "evaluation": {"passed": False},
        },
    }
    info = JobInfo.from_object(obj)
    assert (info.succeeded, info.gate_passed, info.uri, info.sha256) == (
        True,
        False,
        "pvc://store/team-a/v2",
        SHA["v2"],
    )
    assert not info.servable
    assert JobInfo.from_object({"metadata": {"name": "x"}}).servable is False


# ----------------------------------------------------------------------------------------------------- route


def plan(version: str, weight_canary: tuple[str, int] | None = None) -> AdapterPlan:
    stable = Version(f"pvc://store/team-a/{version}", SHA[version], version)
    if weight_canary is None:
        return AdapterPlan("medical", stable)
    name, weight = weight_canary
    return AdapterPlan("medical", stable, Version(f"pvc://store/team-a/{name}", SHA[name], name), weight)


def state(route: ServerRoute, loaded: dict[str, list[str]], unhealthy: tuple[str, ...] = ()) -> Any:
    replicas = [{"url": u, "healthy": u not in unhealthy, "loaded": names, "errors": {}} for u, names in loaded.items()]
    return ServerStatus.model_validate({"route": route.model_dump(mode="json"), "replicas": replicas})


R = ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
V = {k: "medical-" + SHA[k][:12] for k in SHA}


def test_desired_route_matches_the_router_contract() -> None:
    route = desired_route("qwen", list(reversed(R)), [plan("v1", ("v2", 10))], "/mnt/adapters")
    assert route.model_dump(mode="json") == {
        "base_model": "qwen",
        "replicas": R,
        "adapters": [
            {
                "name": "medical",
                "versions": [
                    {"name": V["v1"], "path": "/mnt/adapters/store/team-a/v1", "sha256": SHA["v1"], "weight": 90},
                    {"name": V["v2"], "path": "/mnt/adapters/store/team-a/v2", "sha256": SHA["v2"], "weight": 10},
                ],
            }
        ],
        "agent_port": None,  # no adapter agent: the router manages adapters through vLLM itself
    }


def test_a_version_change_is_staged_until_loaded_everywhere_then_shifted() -> None:
    old = desired_route("qwen", R, [plan("v1")], "/mnt/adapters")
    new = desired_route("qwen", R, [plan("v2")], "/mnt/adapters")
    # 1. stage: v1 keeps all traffic, v2 is added at weight 0 so the router loads it.
    step = next_step(new, state(old, {R[0]: [V["v1"]], R[1]: [V["v1"]]}))
    assert step.pending == (V["v2"],)
    assert [(v.name, v.weight) for v in step.route.adapters[0].versions] == [(V["v1"], 100), (V["v2"], 0)]
    # Loaded on one replica only: still staged.
    staged = step.route
    assert next_step(new, state(staged, {R[0]: [V["v1"], V["v2"]], R[1]: [V["v1"]]})).pending == (V["v2"],)
    # 2. shift: loaded on every healthy replica (an unhealthy one does not hold the rollout back).
    step = next_step(new, state(staged, {R[0]: [V["v1"], V["v2"]], R[1]: []}, unhealthy=(R[1],)))
    assert step.pending == () and same_route(step.route, new)
    # Nothing healthy: nothing is known to be loaded, so no traffic moves.
    assert next_step(new, state(staged, {R[0]: [], R[1]: []}, unhealthy=tuple(R))).pending == (V["v2"],)


def weights(route: ServerRoute) -> list[tuple[str, int]]:
    return [(v.name, v.weight) for v in route.adapters[0].versions]


def test_two_new_versions_are_staged_one_at_a_time_within_the_routers_limit() -> None:
    """The router holds at most two versions per public name: [v1] -> [v2 90%, v3 10%] goes in steps."""
    new = desired_route("qwen", R, [plan("v2", ("v3", 10))], "/mnt/adapters")
    now = desired_route("qwen", R, [plan("v1")], "/mnt/adapters")
    step = next_step(new, state(now, {u: [V["v1"]] for u in R}))
    assert weights(step.route) == [(V["v1"], 100), (V["v2"], 0)] and step.pending == (V["v2"],)
    step = next_step(new, state(step.route, {u: [V["v1"], V["v2"]] for u in R}))
    assert weights(step.route) == [(V["v2"], 100), (V["v3"], 0)] and step.pending == (V["v3"],)
    step = next_step(new, state(step.route, {u: [V["v2"], V["v3"]] for u in R}))
    assert step.pending == () and weights(step.route) == [(V["v2"], 90), (V["v3"], 10)]
    # A canary pair replaced by a new stable: the bigger share keeps all traffic while it loads.
    pair = desired_route("qwen", R, [plan("v1", ("v2", 10))], "/mnt/adapters")
    only = desired_route("qwen", R, [plan("v3")], "/mnt/adapters")
    step = next_step(only, state(pair, {u: [V["v1"], V["v2"]] for u in R}))
    assert weights(step.route) == [(V["v1"], 100), (V["v3"], 0)]


def test_every_route_the_operator_publishes_is_valid_for_the_router() -> None:
    """Contract: every step validates (<= 2 versions, weights sum to 100); model_copy alone does not check."""
    routes = [desired_route("team-a.qwen", R, [plan("v1", ("v2", 10))], "/mnt/adapters")]
    now = desired_route("team-a.qwen", R, [plan("v1")], "/mnt/adapters")
    routes.append(
        next_step(
            desired_route("team-a.qwen", R, [plan("v2", ("v3", 10))], "/mnt/adapters"),
            state(now, {u: [V["v1"]] for u in R}),
        ).route
    )
    routes.append(desired_route("team-a.qwen", [], [AdapterPlan("legal", Version("pvc://s/l"))], "/mnt/adapters"))
    for route in routes:
        parsed = ServerRoute.model_validate(route.model_dump(mode="json"))
        assert parsed.model_dump(mode="json") == route.model_dump(mode="json")


def test_new_names_and_weight_changes_are_published_at_once() -> None:
    new = desired_route("qwen", R, [plan("v1", ("v2", 30))], "/mnt/adapters")
    assert same_route(next_step(new, None).route, new)  # nothing served yet
    both_loaded = {u: [V["v1"], V["v2"]] for u in R}
    current = desired_route("qwen", R, [plan("v1", ("v2", 10))], "/mnt/adapters")
    assert same_route(next_step(new, state(current, both_loaded)).route, new)  # weights only


def test_same_route_ignores_order() -> None:
    a = ServerRoute(
        base_model="b",
        replicas=["x", "y"],
        adapters=[PublicModel(name="m", versions=[AdapterVersion(name="v", path="p")])],
    )
    b = ServerRoute(base_model="b", replicas=["y", "x"], adapters=list(a.adapters))
    assert same_route(a, b) and not same_route(a, b.model_copy(update={"replicas": ["x"]}))


class FakeRouter:
    """In-memory router: a staged version becomes loaded after `load_after` reads."""

    def __init__(self, load_after: int) -> None:
        self.route: ServerRoute | None = None
        self.puts: list[ServerRoute] = []
        self.load_after = load_after
        self.reads = 0

    def get(self, key: str) -> Any:
        if self.route is None:
            return None
        self.reads += 1
        names = [v.name for m in self.route.adapters for v in m.versions]
        loaded = names if self.reads > self.load_after else [n for n in names if n == V["v1"]]
        return state(self.route, {u: loaded for u in self.route.replicas})

    def put(self, key: str, route: ServerRoute) -> None:
        self.route = route
        self.puts.append(route)
        self.reads = 0


def test_publish_stages_then_shifts_on_a_later_round_without_waiting() -> None:
    fake = FakeRouter(load_after=3)
    fake.route = desired_route("qwen", R, [plan("v1")], "/mnt/adapters")
    desired = desired_route("qwen", R, [plan("v2")], "/mnt/adapters")
    rounds = []
    for _ in range(10):
        started = time.monotonic()
        rounds.append(publish(fake, "team-a.qwen", desired))  # type: ignore[arg-type]
        assert time.monotonic() - started < 0.5, "a round never waits for the load"
        if not rounds[-1].pending:
            break
    assert [[(v.name, v.weight) for v in r.adapters[0].versions] for r in fake.puts] == [
        [(V["v1"], 100), (V["v2"], 0)],
        [(V["v2"], 100)],
    ]
    assert [r.pending for r in rounds] == [(V["v2"],)] * 3 + [()]  # staged, loading, loading, shifted
    final = rounds[-1].state
    assert final is not None and final.route.adapters[0].versions[0].name == V["v2"]
    # Replicas that load at once: staged and shifted within one round, as before any requeue.
    instant = FakeRouter(load_after=0)
    instant.route = desired_route("qwen", R, [plan("v1")], "/mnt/adapters")
    assert publish(instant, "k", desired).pending == ()  # type: ignore[arg-type]
    assert [[v.weight for v in r.adapters[0].versions] for r in instant.puts] == [[100, 0], [100]]
    # A load that never finishes leaves the staged route, republished by no later round.
    slow = FakeRouter(load_after=10**6)
    slow.route = desired_route("qwen", R, [plan("v1")], "/mnt/adapters")
    for _ in range(3):
        assert publish(slow, "k", desired).pending == (V["v2"],)  # type: ignore[arg-type]
    assert len(slow.puts) == 1 and [v.weight for v in slow.puts[0].adapters[0].versions] == [100, 0]


def test_a_loading_version_is_looked_at_soon_then_at_the_resync() -> None:
    pacer = RolloutPacer()
    assert pacer.next_round("k", (), fast_for=0.05, resync=10) == 10
    assert pacer.next_round("k", ("v2",), fast_for=0.05, resync=10) == ROLLOUT_POLL_SECONDS
    time.sleep(0.1)
    assert pacer.next_round("k", ("v2",), fast_for=0.05, resync=10) == 10, "loading past rollout_wait_seconds"
    assert pacer.next_round("k", ("v3",), fast_for=0.05, resync=10) == ROLLOUT_POLL_SECONDS, "newly staged: soon"
    time.sleep(0.1)
    pacer.forget("k")  # e.g. a restart: pacing starts over, nothing else is lost
    assert pacer.next_round("k", ("v3",), fast_for=0.05, resync=10) == ROLLOUT_POLL_SECONDS


# ----------------------------------------------------------------------------------------------------- status


def deployment_obj(replicas: int, ready: int, updated: int | None = None) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "readyReplicas": ready,
            "updatedReplicas": replicas if updated is None else updated,
            "availableReplicas": ready,
        },
    }


def ready_pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def snapshot(**over: Any) -> ServerSnapshot:
    plans = over.pop("plans", [plan("v2")])
    route = desired_route("qwen", R, plans, "/mnt/adapters")
    base: dict[str, Any] = {
        "generation": 3,
        "problems": [],
        "spec": spec(),
        "deployment": deployment_obj(2, 2),
        "pods": [ready_pod("p0"), ready_pod("p1")],
        "replica_urls": {"p0": R[0], "p1": R[1]},
        "plans": plans,
        "route": RouteResult(state=state(route, {u: [V["v2"]] for u in R})),
        "router_key": "team-a.qwen",
    }
    base.update(over)
    return ServerSnapshot(**base)


def conds(status: ModelServerStatus) -> dict[str, tuple[str, str, int | None]]:
    return {c.type: (c.status, c.reason, c.observed_generation) for c in status.conditions}


def test_everything_served_is_ready_with_the_generation() -> None:
    status = modelserver_status(ModelServerStatus(), snapshot(), T0)
    assert conds(status) == {
        "Accepted": ("True", "SpecValid", 3),
        "Ready": ("True", "Serving", 3),
        "Progressing": ("False", "Converged", 3),
        "Degraded": ("False", "Healthy", 3),
    }
    assert status.observed_generation == 3 and (status.replicas, status.ready_replicas) == (2, 2)
    (adapter,) = status.adapters
    assert (
        adapter.served and adapter.version == V["v2"] and adapter.fine_tune_job == "v2" and adapter.sha256 == SHA["v2"]
    )
    assert status.adapter_summary == f"medical=v2@{SHA['v2'][:12]}"
    assert [(r.pod, r.url, r.healthy, r.loaded) for r in status.replica_adapters] == [
        ("p0", R[0], True, [V["v2"]]),
        ("p1", R[1], True, [V["v2"]]),
    ]
    again = modelserver_status(status, snapshot(), T1)
    assert [c.last_transition_time for c in again.conditions] == [T0] * 4, "no flip, no new transition time"


def test_rolling_out_and_loading_are_progressing() -> None:
    rolling = modelserver_status(ModelServerStatus(), snapshot(deployment=deployment_obj(3, 2, updated=1)), T0)
    assert conds(rolling)["Progressing"][:2] == ("True", "RollingOut")
    assert conds(rolling)["Ready"][:2] == ("False", "ReplicasNotReady")
    staged_route = desired_route("qwen", R, [plan("v1")], "/mnt/adapters")
    staged = state(
        staged_route.model_copy(
            update={
                "adapters": [
                    PublicModel(
                        name="medical",
                        versions=[*staged_route.adapters[0].versions, AdapterVersion(name=V["v2"], path="p", weight=0)],
                    )
                ]
            }
        ),
        {u: [V["v1"]] for u in R},
    )
    loading = modelserver_status(ModelServerStatus(), snapshot(route=RouteResult(state=staged)), T0)
    assert conds(loading)["Progressing"][:2] == ("True", "LoadingAdapters")
    assert conds(loading)["Ready"][:2] == ("False", "AdaptersNotServed") and not loading.adapters[0].served
    assert conds(loading)["Degraded"][0] == "False"


def test_drift_the_controller_cannot_fix_is_degraded() -> None:
    unavailable = modelserver_status(ModelServerStatus(), snapshot(route=RouteResult(error="connection refused")), T0)
    assert conds(unavailable)["Degraded"][:2] == ("True", "RouterUnavailable")
    assert conds(unavailable)["Ready"][:2] == ("False", "RouterUnavailable")
    rejected = modelserver_status(
        ModelServerStatus(), snapshot(route=RouteResult(error="409 taken", rejected=True)), T0
    )
    assert conds(rejected)["Ready"][:2] == ("False", "RouterRejected")
    assert conds(rejected)["Degraded"][:2] == ("True", "RouterRejected")
    s = spec(adapters=[{"name": "medical", "source": {"fineTuneJob": "v3"}}])
    previous = [ResolvedAdapter(name="medical", fine_tune_job="v2", uri="pvc://store/team-a/v2", sha256=SHA["v2"])]
    plans = resolve_all(s, namespace="team-a", jobs=[job("v3", state="Failed")], previous=previous)
    failed_pin = modelserver_status(ModelServerStatus(), snapshot(spec=s, plans=plans), T0)
    assert conds(failed_pin)["Degraded"][:2] == ("True", SourceReason.FAILED)
    (adapter,) = failed_pin.adapters
    assert adapter.version == V["v2"] and "still serving the previous version" in adapter.message
    assert conds(failed_pin)["Ready"][:2] == ("False", "AdaptersNotServed")
    refused_state = state(desired_route("qwen", R, [plan("v2")], "/mnt/adapters"), {R[0]: [], R[1]: []})
    refused_state = ServerStatus.model_validate(
        {
            "route": refused_state.route.model_dump(mode="json"),
            "replicas": [{"url": u, "healthy": True, "loaded": [], "errors": {V["v2"]: "sha256 mismatch"}} for u in R],
        }
    )
    refused = modelserver_status(ModelServerStatus(), snapshot(route=RouteResult(state=refused_state)), T0)
    assert (
        conds(refused)["Degraded"][:2] == ("True", "AdapterLoadFailed")
        and "sha256 mismatch" in refused.conditions[-1].message
    )
    assert refused.replica_adapters[0].errors == [f"{V['v2']}: sha256 mismatch"]


def test_invalid_spec_and_no_router() -> None:
    problems = modelserver_problems(
        {**spec().to_k8s(), "adapters": [{"name": "m", "source": {"fineTuneJob": "x", "namespace": "elsewhere"}}]}
    )
    invalid = modelserver_status(ModelServerStatus(), ServerSnapshot(generation=1, problems=problems, spec=None), T0)
    assert conds(invalid)["Accepted"][:2] == ("False", "InvalidSpec")
    assert conds(invalid)["Failed"][:2] == ("True", "InvalidSpec")
    assert conds(invalid)["Degraded"][:2] == ("True", "InvalidSpec")
    assert "spec.adapters[0].source.namespace" in (get_condition(invalid.conditions, "Degraded") or invalid).message  # type: ignore[union-attr]
    unrouted = modelserver_status(ModelServerStatus(), snapshot(route=RouteResult(configured=False)), T0)
    assert conds(unrouted)["Degraded"][:2] == ("True", "RouterNotConfigured")
    zero = modelserver_status(
        ModelServerStatus(),
        snapshot(spec=spec(replicas=0), deployment=deployment_obj(0, 0), pods=[], replica_urls={}),
        T0,
    )
    assert conds(zero)["Ready"][:2] == ("False", "ScaledToZero") and conds(zero)["Progressing"][0] == "False"


def test_events_on_promotion_and_degradation() -> None:
    before = modelserver_status(ModelServerStatus(), snapshot(plans=[plan("v1")]), T0)
    after = modelserver_status(before, snapshot(plans=[plan("v2")]), T1)
    assert ("Normal", "AdapterPromoted", f"medical: {V['v1']} -> {V['v2']}") in transitions(before, after)
    broken = modelserver_status(after, snapshot(route=RouteResult(error="refused")), T1)
    assert ("Warning", "RouterUnavailable", "refused") in transitions(after, broken)
    assert transitions(after, after) == []


def test_summary_shows_canaries() -> None:
    text = summary([plan("v1", ("v2", 10)), AdapterPlan("legal", None)])
    assert text == f"medical=v1@{SHA['v1'][:12]} (canary v2@{SHA['v2'][:12]} 10%), legal=-"


# ----------------------------------------------------------------------------------------------------- router client


def test_router_client_against_the_admin_contract(stub_router: type[StubRouter]) -> None:
    with stub_router() as stub:
        client = RouterClient(stub.url, stub.admin_key, timeout=5)
        assert client.get("ns.a") is None
        route = desired_route("qwen", R, [plan("v1")], "/mnt/adapters")
        client.put("ns.a", route)
        got = client.get("ns.a")
        assert got is not None and same_route(got.route, route)
        assert got.replica(R[0]) is not None and V["v1"] in got.replica(R[0]).loaded  # type: ignore[union-attr]
        with pytest.raises(RouterRejected) as taken:  # another server already serves "medical"
            client.put("ns.b", route)
        assert taken.value.status == 409 and "medical" in str(taken.value)
        with pytest.raises(RouterRejected) as denied:
            RouterClient(stub.url, "wrong-key", timeout=5).get("ns.a")
        assert denied.value.status == 401
        stub.fail_with = 503
        with pytest.raises(RouterUnavailable):
            client.get("ns.a")
        stub.fail_with = None
        assert client.delete("ns.a") is True and client.delete("ns.a") is False
    with pytest.raises(RouterUnavailable):
        RouterClient(stub.url, stub.admin_key, timeout=2).get("ns.a")  # nothing listens any more


def test_router_client_against_the_real_router(serve_router: ServeRouter) -> None:
    """Contract with loraplane.serving.router: what the client sends is accepted, what it reads back parses."""
    from tests.serving.router_helpers import ADMIN_KEY

    with serve_router() as router:
        client = RouterClient(router.url, ADMIN_KEY, timeout=10)
        staged = next_step(
            desired_route("team-a.qwen", R, [plan("v2")], "/mnt/adapters"),
            state(desired_route("team-a.qwen", R, [plan("v1")], "/mnt/adapters"), {u: [V["v1"]] for u in R}),
        ).route
        assert client.get("team-a.qwen") is None
        client.put("team-a.qwen", staged)
        got = client.get("team-a.qwen")
        assert got is not None and same_route(got.route, staged)
        assert {r.url for r in got.replicas} == set(R) and all(not r.healthy for r in got.replicas)
        other = desired_route("team-b.qwen", ["http://10.0.0.9:8000"], [plan("v1")], "/mnt/adapters")
        with pytest.raises(RouterRejected) as taken:
            client.put("team-b.qwen", other)
        assert taken.value.status == 409 and "medical" in str(taken.value)
        with pytest.raises(RouterRejected) as forbidden:
            RouterClient(router.url, "user-key", timeout=10).get("team-a.qwen")
        assert forbidden.value.status in (401, 403)
        assert client.delete("team-a.qwen") is True and client.get("team-a.qwen") is None
        assert client.delete("team-a.qwen") is False


# ------------------------------------------------------------------------------------ compatibility before load

SERVED_BASE = "hf://Qwen/Qwen2.5-7B-Instruct@abc"  # spec()'s base model; spec()'s maxLoraRank is 16


def trained(name: str, base: str = SERVED_BASE, rank: int = 8, **over: Any) -> JobInfo:
    """A run that succeeded and passed its gate, trained on `base` with LoRA rank `rank`."""
    from dataclasses import replace

    return replace(job(name, **over), base_model=base, lora_rank=rank)


def pinned_to(name: str, canary: str | None = None) -> ModelServerSpec:
    adapter: dict[str, Any] = {"name": "medical", "source": {"fineTuneJob": name}}
    if canary:
        adapter["canary"] = {"source": {"fineTuneJob": canary}, "weight": 20}
    return spec(adapters=[adapter])


PREVIOUS_V2 = [ResolvedAdapter(name="medical", fine_tune_job="v2", uri="pvc://store/team-a/v2", sha256=SHA["v2"])]


def test_a_wrong_base_adapter_of_the_same_shape_is_refused_and_the_previous_version_keeps_serving() -> None:
    """Qwen2.5-7B (base) and Qwen2.5-7B-Instruct share every shape: vLLM would load it silently."""
    s = pinned_to("v3")
    jobs = [trained("v2"), trained("v3", base="hf://Qwen/Qwen2.5-7B@abc")]
    (plan,) = resolve_all(s, namespace="team-a", jobs=jobs, previous=PREVIOUS_V2)
    assert [(i.severity, i.reason) for i in plan.issues] == [("Degraded", SourceReason.INCOMPATIBLE)]
    message = plan.issues[0].message
    assert message.startswith("spec.adapters[0].source.fineTuneJob: the adapter of FineTuneJob v3 is not loaded")
    assert "hf://Qwen/Qwen2.5-7B@abc differs from spec.baseModel.uri hf://Qwen/Qwen2.5-7B-Instruct@abc" in message
    assert plan.stable == Version("pvc://store/team-a/v2", SHA["v2"], "v2") and plan.fallback
    route = desired_route("team-a.qwen", R, [plan], "/mnt/adapters")
    assert [v.name for m in route.adapters for v in m.versions] == [V["v2"]], "v3 never reaches the router"
    status = modelserver_status(ModelServerStatus(), snapshot(spec=s, plans=[plan]), T0)
    assert conds(status)["Degraded"][:2] == ("True", SourceReason.INCOMPATIBLE)
    degraded = get_condition(status.conditions, "Degraded")
    assert degraded is not None and "spec.baseModel.uri" in degraded.message
    assert status.adapters[0].version == V["v2"] and "still serving the previous version" in status.adapters[0].message
    # the same repository at another pinned revision is another base model too
    (plan,) = resolve_all(s, namespace="team-a", jobs=[trained("v3", base="hf://Qwen/Qwen2.5-7B-Instruct@def")])
    assert plan.stable is None and plan.issues[0].reason == SourceReason.INCOMPATIBLE


def test_an_adapter_above_max_lora_rank_is_refused_naming_both_values() -> None:
    (plan,) = resolve_all(pinned_to("v3"), namespace="team-a", jobs=[trained("v3", rank=32)], previous=PREVIOUS_V2)
    assert [i.reason for i in plan.issues] == [SourceReason.INCOMPATIBLE]
    assert "its LoRA rank 32 (spec.lora.r) exceeds spec.vllm.maxLoraRank 16" in plan.issues[0].message
    assert plan.stable is not None and plan.stable.fine_tune_job == "v2" and plan.fallback
    # a selector does not pick the newest passing run when it does not fit: it reports it, nothing is promoted
    jobs = [trained("v1", created=T0), trained("v3", created=T1, rank=32)]
    (plan,) = resolve_all(spec(), namespace="team-a", jobs=jobs)
    assert plan.stable is None and plan.issues[0].reason == SourceReason.INCOMPATIBLE
    assert plan.issues[0].message.startswith("spec.adapters[0].source: the adapter of FineTuneJob v3")
    # a canary that does not fit is dropped; the stable version takes all the traffic
    (plan,) = resolve_all(pinned_to("v1", canary="v3"), namespace="team-a", jobs=jobs)
    assert [(v.fine_tune_job, w) for v, w in plan.versions] == [("v1", 100)]
    assert plan.issues[0].message.startswith("spec.adapters[0].canary.source.fineTuneJob:")


@pytest.mark.parametrize(
    ("base", "rank"),
    [
        (SERVED_BASE, 16),  # the server's own base model, rank == maxLoraRank
        ("hf://Qwen/Qwen2.5-7B-Instruct", 8),  # trained unpinned: any revision of that repository fits
        ("", 8),  # nothing recorded (never the case for a real run): not checked
    ],
)
def test_a_matching_adapter_is_served(base: str, rank: int) -> None:
    (plan,) = resolve_all(pinned_to("v3"), namespace="team-a", jobs=[trained("v3", base=base, rank=rank)])
    assert plan.issues == () and plan.stable == Version("pvc://store/team-a/v3", SHA["v3"], "v3")


def test_after_a_base_model_change_the_previous_version_is_not_kept_either() -> None:
    """spec.baseModel moved to another model: the adapters of the old one must not be routed to it."""
    s = spec(baseModel={"uri": "hf://meta-llama/Llama-3.1-8B-Instruct"}, adapters=pinned_to("v3").to_k8s()["adapters"])
    jobs = [trained("v2"), trained("v3", state="Training")]
    (plan,) = resolve_all(s, namespace="team-a", jobs=jobs, previous=PREVIOUS_V2)
    assert plan.stable is None and not plan.versions
    assert [i.reason for i in plan.issues] == [SourceReason.RUNNING, SourceReason.INCOMPATIBLE]
    assert "previously served FineTuneJob v2 is not kept" in plan.issues[1].message
    assert "hf://meta-llama/Llama-3.1-8B-Instruct" in plan.issues[1].message


def test_job_info_reads_the_base_model_and_rank_the_run_trained_with() -> None:
    obj: dict[str, Any] = {
        "metadata": {"namespace": "team-a", "name": "v2"},
        "spec": {"baseModel": {"uri": "hf://Qwen/Qwen2.5-7B-Instruct@abc"}, "lora": {"r": 32}},
        "status": {"adapter": {"uri": "pvc://store/team-a/v2", "sha256": SHA["v2"]}},
    }
    info = JobInfo.from_object(obj)
    assert (info.base_model, info.lora_rank) == ("hf://Qwen/Qwen2.5-7B-Instruct@abc", 32)
    obj["status"]["adapter"].update(baseModel="hf://Qwen/Qwen2.5-7B", baseModelRevision="v1")  # what the run recorded
    del obj["spec"]["lora"]
    assert (JobInfo.from_object(obj).base_model, JobInfo.from_object(obj).lora_rank) == ("hf://Qwen/Qwen2.5-7B@v1", 8)
