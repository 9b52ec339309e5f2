"""Adapters through a store on real pods, across two namespaces, with no shared PVC (issue: adapter store).

Two stores, one test each: an OCI registry (docker-registry with an htpasswd login) and an S3-compatible
store (versitygw with its own keys), each listening on the node bridge (pods reach it; nothing on the
outside interface). In one namespace a FineTuneJob trains the packaged SmolLM2 and pushes its adapter there
(`spec.output.uri`, the login from a Secret mounted into the training pod only). In another namespace a
ModelServer (`spec.adapterAgent`: its own login Secret, mounted into the agent only) with
`allowedNamespaces` serves that run: the agent in the vLLM pod pulls the pinned version, verifies it and has
vLLM load it; the router answers with it. The serving pods mount no claim at all.

Uses the session's real-node cluster and install (tests/e2e/conftest.py); runs after test_cluster_path.py.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
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
from tests.support.s3 import S3Server, s3_server

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

LOGIN = ("loraplane", "s3cret-for-tests")
QUESTION = "Which department treats a patient with atrial fibrillation?"


@pytest.fixture(scope="module")
def pod_registry(loraplane: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry with an htpasswd login on the node bridge's address: reachable from pods."""
    with private_registry(tmp_path_factory.mktemp("pod-registry"), login=LOGIN, host=NODE_IP) as registry:
        yield registry


@pytest.fixture(scope="module")
def pod_s3(loraplane: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """versitygw with its own keys on the node bridge's address: reachable from pods."""
    with s3_server(tmp_path_factory.mktemp("pod-s3"), host=NODE_IP) as server:
        yield server


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


def opaque_secret(c: Cluster, ns: str, name: str, data: dict[str, str]) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    c.apply(secret, "-n", ns)


@dataclass(frozen=True)
class Store:
    """What differs between the stores: names, the output and agent settings, the pin in status, the login."""

    kind: str
    output: dict[str, Any]  # FineTuneJob spec.output (its login Secret: push-login in the training namespace)
    agent: dict[str, Any]  # ModelServer spec.adapterAgent (its login Secret: pull-login in the serving namespace)
    auth_volume: str  # the pod volume of the login: mounted into the agent alone

    @property
    def job(self) -> str:
        return f"triage-notes-{self.kind}"

    @property
    def server(self) -> str:
        return f"triage-{self.kind}"

    @property
    def public(self) -> str:
        return f"triage-medical-{self.kind}"

    def pinned(self, adapter: dict[str, Any]) -> tuple[str, str]:
        """(the pinned version the run reports, the digest the agent caches it under), checked against the spec."""
        if self.kind == "oci":
            digest = adapter["digest"]
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), adapter
            assert adapter["ociUri"] == f"{self.output['uri']}:{self.job}@{digest}"  # the tag: the job's name
            return adapter["ociUri"], digest
        assert adapter["s3Uri"] == f"{self.output['uri']}/{self.job}@sha256:{adapter['sha256']}", adapter
        return adapter["s3Uri"], f"sha256:{adapter['sha256']}"


@pytest.fixture(params=["oci", "s3"])
def store(request: pytest.FixtureRequest, loraplane: Cluster, namespaces: tuple[str, str]) -> Store:
    """The store's server on the node bridge, the login Secrets in both namespaces, and the settings."""
    c, (train, serve) = loraplane, namespaces
    if request.param == "oci":
        registry: Registry = request.getfixturevalue("pod_registry")
        for ns, name in ((train, "push-login"), (serve, "pull-login")):
            login_secret(c, ns, name, registry)
        output = {"uri": f"oci://{registry.addr}/{train}/medical", "credentialsSecret": "push-login", "plainHttp": True}
        agent = {"credentialsSecret": "pull-login", "plainHttp": True, "cacheSize": "512Mi"}
        return Store("oci", output, agent, "registry-auth")
    s3: S3Server = request.getfixturevalue("pod_s3")
    login = s3.credentials_file(request.getfixturevalue("tmp_path") / "credentials").read_text()
    for ns, name in ((train, "s3-push"), (serve, "s3-pull")):
        opaque_secret(c, ns, name, {"credentials": login})
    output = {
        "uri": f"s3://{s3.bucket}/{train}/medical",
        "s3": {"endpoint": s3.endpoint, "credentialsSecret": "s3-push"},
    }
    agent = {"s3": {"endpoint": s3.endpoint, "credentialsSecret": "s3-pull"}, "cacheSize": "512Mi"}
    return Store("s3", output, agent, "s3-auth")


@pytest.mark.timeout(2400)
def test_a_pushed_adapter_is_served_in_another_namespace_without_a_shared_volume(
    loraplane: Cluster, namespaces: tuple[str, str], store: Store
) -> None:
    c, (train, serve) = loraplane, namespaces
    training = {"epochs": 1, "maxSteps": 24, "batchSize": 4, "learningRate": 2.0e-3, "maxSeqLength": 128}
    spec = {
        "baseModel": {"uri": "builtin://smollm2-135m-instruct"},
        "dataset": {"uri": "builtin://medical", "maxSamples": 96, "validationSplit": 0.0},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targetModules": ["all-linear"]},
        "training": training,
        "output": store.output,
    }
    c.apply(resource("FineTuneJob", store.job, spec), "-n", train)

    def finished() -> dict[str, Any] | None:
        ftj = c.get("ftj", store.job, "-n", train)
        phase = ftj.get("status", {}).get("phase")
        if phase == "Failed":
            raise AssertionError(f"FineTuneJob failed: {condition(ftj, 'Failed')}")
        return ftj if phase == "Succeeded" else None

    ftj = poll("FineTuneJob Succeeded", finished, timeout=1500, interval=2)
    adapter = ftj["status"]["adapter"]
    pinned, digest = store.pinned(adapter)

    spec = {
        "baseModel": {"uri": "builtin://smollm2-135m-instruct"},
        "replicas": 1,
        "vllm": {"maxLoras": 2, "maxLoraRank": 16},
        "allowedNamespaces": [train],
        "adapterAgent": store.agent,
        "adapters": [{"name": store.public, "source": {"fineTuneJob": store.job, "namespace": train}}],
    }
    c.apply(resource("ModelServer", store.server, spec), "-n", serve)

    def loaded() -> dict[str, Any] | None:
        ms = c.get("ms", store.server, "-n", serve)
        if condition(ms, "Ready").get("status") != "True":
            return None
        served = {a["name"]: a for a in ms["status"].get("adapters", [])}
        version = served.get(store.public, {}).get("version")
        holders = [r for r in ms["status"].get("replicaAdapters", []) if version and version in r["loaded"]]
        return ms if holders else None

    try:
        ms = poll("the pushed adapter loaded through the agent", loaded, timeout=1500, interval=2)
    except AssertionError:
        status = c.get("ms", store.server, "-n", serve).get("status")
        raise AssertionError(f"ModelServer not serving the adapter: {json.dumps(status)[:3000]}") from None
    (served,) = ms["status"]["adapters"]
    assert served["fineTuneJob"] == f"{train}/{store.job}" and served["uri"] == pinned
    assert served["sha256"] == adapter["sha256"]

    (pod,) = wait_pods_ready(c, serve, f"loraplane.io/modelserver={store.server}", 1, 60)
    assert pod["spec"]["nodeName"] == NODE
    assert claims_of(pod) == [], "the serving pod mounts no claim"
    vllm, agent = pod["spec"]["containers"]
    assert agent["name"] == "adapter-agent"
    assert [m for m in agent["volumeMounts"] if m["name"] == store.auth_volume]
    assert not [m for m in vllm["volumeMounts"] if m["name"] == store.auth_volume], "the login is the agent's alone"
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
            model=store.public, messages=[{"role": "user", "content": QUESTION}], max_tokens=16, temperature=0
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

    c.kubectl("delete", "ms", store.server, "-n", serve, "--timeout=300s")
    c.kubectl("delete", "ftj", store.job, "-n", train, "--timeout=300s")
