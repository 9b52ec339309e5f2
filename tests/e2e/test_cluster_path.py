"""The cluster path on real pods, tried in order as a new user would (issue: a real node).

1. `kubectl apply -k manifests/overlays/local`: the operator pod becomes Ready (`kubectl wait` works).
2. A FineTuneJob on the packaged SmolLM2: a real trainer pod trains; killed mid-run, the next pod resumes
   from its checkpoint; the job reaches Succeeded with the adapter's sha256, progress and evaluation.
3. A ModelServer naming that job: real vLLM pods (init container, probes, the adapter loaded) and Ready.
4. Through the router pod's Service, the official `openai` client gets the adapter's answers, streamed
   and not, and they differ from the base model's.
5. A vLLM pod deleted under traffic: no request fails and the replacement gets the adapter back.
6. `kubectl delete` of both leaves nothing behind but the adapter claim (retentionPolicy Retain).

Each step needs the ones before it (module state); a failed step fails the later ones with its name.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.kube import Cluster, poll
from tests.support.real_node import NODE, SYSTEM_NS, is_ready, router_api_key, router_url, wait_pods_ready

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

JOB = "clinic-notes"
SERVER = "clinic"
PUBLIC = "medical"
VLLM_PODS = f"loraplane.io/modelserver={SERVER},app.kubernetes.io/component=vllm"
QUESTION = "Which department treats a patient with atrial fibrillation?"

FINETUNEJOB = {
    "apiVersion": "loraplane.io/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": JOB, "labels": {"loraplane.io/adapter": PUBLIC}},
    "spec": {
        "baseModel": {"uri": "builtin://smollm2-135m-instruct"},
        "dataset": {"uri": "builtin://medical", "maxSamples": 96, "validationSplit": 0.0},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targetModules": ["all-linear"]},
        "training": {
            "epochs": 1,
            "maxSteps": 24,
            "batchSize": 4,
            "learningRate": 2.0e-3,
            "maxSeqLength": 128,
            "checkpointSteps": 4,
        },
        "evaluation": {"heldOutUri": "builtin://medical-heldout", "metric": "Contains", "maxSamples": 8},
    },
}

MODELSERVER = {
    "apiVersion": "loraplane.io/v1alpha1",
    "kind": "ModelServer",
    "metadata": {"name": SERVER},
    "spec": {
        "baseModel": {"uri": "builtin://smollm2-135m-instruct"},
        "replicas": 2,
        "vllm": {"maxLoras": 2, "maxLoraRank": 16},
        "adapters": [{"name": PUBLIC, "source": {"fineTuneJob": JOB}}],
    },
}


class Steps:
    """What the steps hand to each other, and which of them finished."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.values: dict[str, Any] = {}

    def need(self, *steps: str) -> None:
        missing = [s for s in steps if s not in self.done]
        if missing:
            pytest.fail(f"an earlier step did not finish: {missing}", pytrace=False)


@pytest.fixture(scope="module")
def steps() -> Steps:
    return Steps()


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def not_failed(c: Cluster, ns: str) -> dict[str, Any]:
    """The FineTuneJob; a failed one ends the wait at once with its condition."""
    ftj = c.get("ftj", JOB, "-n", ns)
    if ftj.get("status", {}).get("phase") == "Failed":
        raise AssertionError(f"FineTuneJob failed: {condition(ftj, 'Failed')}")
    return ftj


def trainer_pods(c: Cluster, ns: str) -> list[dict[str, Any]]:
    pods = c.get("pods", "-n", ns, "-l", f"job-name={JOB}-train")["items"]
    return sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"])


@pytest.fixture(scope="module")
def router(loraplane: Cluster) -> Iterator[openai.OpenAI]:
    """The official client on the router's Service (its ClusterIP, through kube-proxy)."""
    key = router_api_key(loraplane)  # made by the install's bootstrap Job
    client = openai.OpenAI(base_url=f"{router_url(loraplane)}/v1", api_key=key, max_retries=0, timeout=120)
    yield client
    client.close()


def test_1_install_operator_pod_ready(loraplane: Cluster, steps: Steps) -> None:
    c = loraplane
    out = c.kubectl(
        "wait", "--for=condition=Ready", "pod", "-l", "app.kubernetes.io/name=loraplane-operator",
        "-n", SYSTEM_NS, "--timeout=120s",
    )  # fmt: skip
    assert "condition met" in out.stdout
    operator = wait_pods_ready(c, SYSTEM_NS, "app.kubernetes.io/name=loraplane-operator", 1, 60)[0]
    assert operator["spec"]["nodeName"] == NODE  # a real pod, not a KWOK one
    assert operator["spec"]["containers"][0]["image"].startswith("localhost:")
    # closed by default: the bootstrap Job made both keys, and the router answers nobody without one
    for secret in ("loraplane-router-admin", "loraplane-router-keys"):
        assert c.kubectl("get", "secret", secret, "-n", SYSTEM_NS, check=False).returncode == 0, secret
    anonymous = httpx.get(f"{router_url(c)}/v1/models", timeout=30)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key", anonymous.text
    wrong = httpx.get(f"{router_url(c)}/v1/models", headers={"Authorization": "Bearer wrong"}, timeout=30)
    assert wrong.status_code == 401
    admin = httpx.get(
        f"{router_url(c)}/admin/v1/servers", headers={"Authorization": f"Bearer {router_api_key(c)}"}, timeout=30
    )
    assert admin.status_code == 403, admin.text  # a user key never opens the admin API
    steps.done.add("install")


@pytest.mark.timeout(1800)
def test_2_finetunejob_trains_resumes_and_succeeds(loraplane: Cluster, user_namespace: str, steps: Steps) -> None:
    steps.need("install")
    c, ns = loraplane, user_namespace
    c.apply(FINETUNEJOB, "-n", ns)

    def checkpointed() -> dict[str, Any] | None:
        ftj = not_failed(c, ns)
        step = ftj.get("status", {}).get("progress", {}).get("step", 0)
        return ftj if step >= 6 else None  # past the first checkpoint (every 4 steps)

    poll("training past its first checkpoint", checkpointed, timeout=1500, interval=2)
    first = trainer_pods(c, ns)
    assert len(first) == 1 and first[0]["spec"]["nodeName"] == NODE
    c.kubectl("delete", "pod", first[0]["metadata"]["name"], "-n", ns, "--wait=false")

    def succeeded() -> dict[str, Any] | None:
        ftj = not_failed(c, ns)
        return ftj if ftj.get("status", {}).get("phase") == "Succeeded" else None

    ftj = poll("FineTuneJob Succeeded", succeeded, timeout=1500, interval=2)
    killed = first[0]["metadata"]["name"]
    pods = [p for p in trainer_pods(c, ns) if p["metadata"]["name"] != killed]  # the deleted one is gone
    assert pods, "the killed trainer pod was not replaced"
    log = c.kubectl("logs", pods[-1]["metadata"]["name"], "-n", ns).stdout
    assert re.search(r"resuming from \S*checkpoint-\d+", log), log[-2000:]

    status = ftj["status"]
    assert re.fullmatch(r"[0-9a-f]{64}", status["adapter"]["sha256"])
    assert status["progress"]["step"] == status["progress"]["totalSteps"] == 24
    assert status["evaluation"]["metric"] == "Contains"
    assert {"baseScore", "adapterScore", "passed"} <= set(status["evaluation"])
    table = c.kubectl("get", "ftj", JOB, "-n", ns).stdout
    assert "Succeeded" in table and "24/24" in table, table
    steps.values["sha256"] = status["adapter"]["sha256"]
    steps.done.add("train")


@pytest.mark.timeout(1800)
def test_3_modelserver_runs_real_vllm_pods(loraplane: Cluster, user_namespace: str, steps: Steps) -> None:
    steps.need("train")
    c, ns = loraplane, user_namespace
    c.apply(MODELSERVER, "-n", ns)

    def ready() -> dict[str, Any] | None:
        ms = c.get("ms", SERVER, "-n", ns)
        return ms if condition(ms, "Ready").get("status") == "True" else None

    try:
        ms = poll("ModelServer Ready", ready, timeout=1500, interval=2)
    except AssertionError:
        ms = c.get("ms", SERVER, "-n", ns)
        raise AssertionError(f"ModelServer not Ready: {ms.get('status')}") from None
    pods = wait_pods_ready(c, ns, VLLM_PODS, 2, 60)
    for pod in pods:
        spec = pod["spec"]
        assert spec["nodeName"] == NODE
        assert [x["name"] for x in spec["initContainers"]] == ["fetch-model"]
        vllm = spec["containers"][0]
        assert vllm["image"].endswith("/vllm-cpu:0.1.0")
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(vllm)
    served = {a["name"]: a for a in ms["status"]["adapters"]}
    assert served[PUBLIC]["sha256"] == steps.values["sha256"]
    version = served[PUBLIC]["version"]

    # Ready needs one serving replica; the second vLLM pod may still be starting (CI saw it 1 of 2).
    def on_both() -> dict[str, Any] | None:
        ms = c.get("ms", SERVER, "-n", ns)
        loaded = [r for r in ms["status"].get("replicaAdapters", []) if version in r["loaded"]]
        return ms if len(loaded) == 2 else None

    try:
        ms = poll("the adapter loaded on both replicas", on_both, timeout=600, interval=2)
    except AssertionError:
        status = c.get("ms", SERVER, "-n", ns)["status"]
        raise AssertionError(f"adapter not on both replicas: {status.get('replicaAdapters')}") from None
    steps.values["base"] = ms["status"]["routerKey"]
    steps.done.add("serve")


def ask(client: openai.OpenAI, model: str, max_tokens: int = 24) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], max_tokens=max_tokens, temperature=0
    )
    return answer.choices[0].message.content or ""


def test_4_openai_client_through_the_router_service(router: openai.OpenAI, steps: Steps) -> None:
    steps.need("serve")
    models = {m.id for m in router.models.list()}
    assert {PUBLIC, steps.values["base"]} <= models, models

    adapter = ask(router, PUBLIC)
    base = ask(router, steps.values["base"])
    assert adapter.strip() and base.strip()
    assert adapter != base, f"the adapter answers like the base model: {adapter!r}"

    stream = router.chat.completions.create(
        model=PUBLIC, messages=[{"role": "user", "content": QUESTION}], max_tokens=24, temperature=0, stream=True
    )
    chunks = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(chunks) > 1
    assert "".join(chunks) == adapter  # greedy: the streamed answer is the same answer
    steps.done.add("route")


@pytest.mark.timeout(1800)
def test_5_vllm_pod_deleted_under_traffic(
    loraplane: Cluster, user_namespace: str, router: openai.OpenAI, steps: Steps
) -> None:
    steps.need("route")
    c, ns = loraplane, user_namespace
    results: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            try:
                results.append(ask(router, PUBLIC, max_tokens=8))
            except openai.OpenAIError as exc:
                failures.append(repr(exc))

    before = {p["metadata"]["name"] for p in wait_pods_ready(c, ns, VLLM_PODS, 2, 60)}
    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        poll("traffic flowing", lambda: len(results) >= 3, timeout=120)
        victim = sorted(before)[0]
        c.kubectl("delete", "pod", victim, "-n", ns, "--wait=false")

        def back() -> bool:
            pods = c.get("pods", "-n", ns, "-l", VLLM_PODS)["items"]
            new = [p for p in pods if p["metadata"]["name"] not in before and is_ready(p)]
            if not new:
                return False
            ms = c.get("ms", SERVER, "-n", ns)
            version = ms["status"]["adapters"][0]["version"]
            holders = {r["pod"] for r in ms["status"]["replicaAdapters"] if version in r["loaded"]}
            return new[0]["metadata"]["name"] in holders and len(holders) == 2

        poll("the replacement pod serving the adapter", back, timeout=900, interval=2)
        served = len(results)
        poll("traffic on the replaced set", lambda: len(results) >= served + 3, timeout=120)
    finally:
        stop.set()
        worker.join(timeout=150)
    assert not failures, f"{len(failures)} of {len(results) + len(failures)} requests failed: {failures[:3]}"
    steps.done.add("failover")


def test_6_delete_leaves_only_the_retained_adapter(
    loraplane: Cluster, user_namespace: str, router: openai.OpenAI, steps: Steps
) -> None:
    steps.need("serve")
    c, ns = loraplane, user_namespace
    c.kubectl("delete", "ms", SERVER, "-n", ns, "--timeout=300s")
    c.kubectl("delete", "ftj", JOB, "-n", ns, "--timeout=300s")

    def empty() -> list[str] | None:
        left = c.kubectl(
            "get", "deploy,rs,pods,svc,pdb,jobs,configmaps,pvc", "-n", ns, "-o", "name", check=False
        ).stdout.split()
        left = [x for x in left if x != "configmap/kube-root-ca.crt"]
        return left if left == [f"persistentvolumeclaim/{JOB}-adapter"] else None

    poll("only the retained adapter claim left", empty, timeout=300, interval=2)
    models = {m.id for m in router.models.list()}
    assert PUBLIC not in models and steps.values["base"] not in models, models  # the route left the router
