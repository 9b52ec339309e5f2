"""Adapters through a registry on real pods, across two namespaces, with no shared PVC (issue: adapter store).

A registry that asks for a login listens on the node bridge (pods reach it; nothing on the outside
interface). In one namespace a FineTuneJob trains the packaged SmolLM2 and pushes its adapter there
(`spec.output.uri`, the login from a Secret mounted into the training pod only). In another namespace a
ModelServer with `spec.adapterAgent` (its own login Secret, mounted into the agent only) and
`allowedNamespaces` serves that run: the agent in the vLLM pod pulls the artifact by digest, verifies it
and has vLLM load it; the router answers with it. The serving pods mount no claim at all.

Uses the session's real-node cluster and install (tests/e2e/conftest.py); runs after test_cluster_path.py.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.support.kube import Cluster, poll
from tests.support.real_node import (
    NODE,
    NODE_IP,
    resource,
    restricted_namespace,
    router_api_key,
    router_url,
    wait_pods_ready,
)
from tests.support.registry import Registry, private_registry

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

JOB = "triage-notes"
SERVER = "triage"
PUBLIC = "triage-medical"
LOGIN = ("loraplane", "s3cret-for-tests")
QUESTION = "Which department treats a patient with atrial fibrillation?"


@pytest.fixture(scope="module")
def pod_registry(loraplane: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry with an htpasswd login on the node bridge's address: reachable from pods."""
    with private_registry(tmp_path_factory.mktemp("pod-registry"), login=LOGIN, host=NODE_IP) as registry:
        yield registry


def login_secret(c: Cluster, ns: str, name: str, registry: Registry) -> None:
    """A kubernetes.io/dockerconfigjson Secret, as `kubectl create secret docker-registry` makes it."""
    assert registry.docker_config is not None
    data = base64.b64encode(registry.docker_config.read_bytes()).decode()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": data},
    }
    c.apply(secret, "-n", ns)


@pytest.fixture(scope="module")
def namespaces(loraplane: Cluster) -> Iterator[tuple[str, str]]:
    """(training namespace, serving namespace), both enforcing Pod Security `restricted`."""
    train, serve = restricted_namespace(loraplane, "train"), restricted_namespace(loraplane, "serve")
    yield train, serve
    for ns in (serve, train):
        loraplane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def claims_of(pod: dict[str, Any]) -> list[str]:
    return [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]


@pytest.mark.timeout(2400)
def test_a_pushed_adapter_is_served_in_another_namespace_without_a_shared_volume(
    loraplane: Cluster, namespaces: tuple[str, str], pod_registry: Registry
) -> None:
    c, (train, serve) = loraplane, namespaces
    login_secret(c, train, "push-login", pod_registry)
    login_secret(c, serve, "pull-login", pod_registry)
    repository = f"oci://{pod_registry.addr}/{train}/medical"
    training = {"epochs": 1, "maxSteps": 24, "batchSize": 4, "learningRate": 2.0e-3, "maxSeqLength": 128}
    spec = {
        "baseModel": {"uri": "builtin://smollm2-135m-instruct"},
        "dataset": {"uri": "builtin://medical", "maxSamples": 96, "validationSplit": 0.0},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targetModules": ["all-linear"]},
        "training": training,
        "output": {"uri": repository, "credentialsSecret": "push-login", "plainHttp": True},
    }
    c.apply(resource("FineTuneJob", JOB, spec), "-n", train)

    def finished() -> dict[str, Any] | None:
        ftj = c.get("ftj", JOB, "-n", train)
        phase = ftj.get("status", {}).get("phase")
        if phase == "Failed":
            raise AssertionError(f"FineTuneJob failed: {condition(ftj, 'Failed')}")
        return ftj if phase == "Succeeded" else None

    ftj = poll("FineTuneJob Succeeded", finished, timeout=1500, interval=2)
    adapter = ftj["status"]["adapter"]
    digest = adapter["digest"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    assert adapter["ociUri"] == f"{repository}:{JOB}@{digest}"  # the tag defaults to the job's name

    spec = {
        "baseModel": {"uri": "builtin://smollm2-135m-instruct"},
        "replicas": 1,
        "vllm": {"maxLoras": 2, "maxLoraRank": 16},
        "allowedNamespaces": [train],
        "adapterAgent": {"credentialsSecret": "pull-login", "plainHttp": True, "cacheSize": "512Mi"},
        "adapters": [{"name": PUBLIC, "source": {"fineTuneJob": JOB, "namespace": train}}],
    }
    c.apply(resource("ModelServer", SERVER, spec), "-n", serve)

    def loaded() -> dict[str, Any] | None:
        ms = c.get("ms", SERVER, "-n", serve)
        if condition(ms, "Ready").get("status") != "True":
            return None
        served = {a["name"]: a for a in ms["status"].get("adapters", [])}
        version = served.get(PUBLIC, {}).get("version")
        holders = [r for r in ms["status"].get("replicaAdapters", []) if version and version in r["loaded"]]
        return ms if holders else None

    try:
        ms = poll("the pushed adapter loaded through the agent", loaded, timeout=1500, interval=2)
    except AssertionError:
        status = c.get("ms", SERVER, "-n", serve).get("status")
        raise AssertionError(f"ModelServer not serving the adapter: {json.dumps(status)[:3000]}") from None
    (served,) = ms["status"]["adapters"]
    assert served["fineTuneJob"] == f"{train}/{JOB}" and served["uri"] == adapter["ociUri"]
    assert served["sha256"] == adapter["sha256"]

    (pod,) = wait_pods_ready(c, serve, f"loraplane.io/modelserver={SERVER}", 1, 60)
    assert pod["spec"]["nodeName"] == NODE
    assert claims_of(pod) == [], "the serving pod mounts no claim"
    vllm, agent = pod["spec"]["containers"]
    assert agent["name"] == "adapter-agent"
    assert [m for m in agent["volumeMounts"] if m["name"] == "registry-auth"]
    assert not [m for m in vllm["volumeMounts"] if m["name"] == "registry-auth"], "the login is the agent's alone"
    probe = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8001/residency').read().decode())"
    name = pod["metadata"]["name"]
    out = c.kubectl("exec", name, "-n", serve, "-c", "adapter-agent", "--", "python", "-c", probe).stdout
    residency = json.loads(out)
    (entry,) = residency["cache"]["entries"]
    assert entry["digest"] == digest and served["version"] in entry["usedBy"], residency
    # the router told the agent the replica's versions; the agent loaded it (the router loads nothing itself)
    assert residency["desired"] == [served["version"]] and residency["errors"] == {}, residency

    client = openai.OpenAI(base_url=f"{router_url(c)}/v1", api_key=router_api_key(c), max_retries=0, timeout=120)
    try:
        answer = client.chat.completions.create(
            model=PUBLIC, messages=[{"role": "user", "content": QUESTION}], max_tokens=16, temperature=0
        )
        base = client.chat.completions.create(
            model=ms["status"]["routerKey"],
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=16,
            temperature=0,
        )
    finally:
        client.close()
    text = answer.choices[0].message.content or ""
    assert text.strip() and text != (base.choices[0].message.content or ""), text

    c.kubectl("delete", "ms", SERVER, "-n", serve, "--timeout=300s")
    c.kubectl("delete", "ftj", JOB, "-n", train, "--timeout=300s")
