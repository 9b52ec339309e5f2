"""End to end: the ModelServer controller on the real control plane, the real router, real vLLM processes.

How simulated pods reach real processes:
  * two vLLM CPU processes of a tiny model run on loopback (`vllm_pair`, tests/serving/fixtures.py), each on
    its own address, with an adapter agent next to it on the same address and the operator's agent port (as
    the sidecar in each vLLM pod); the agents check the adapters the tests write and load them;
  * the router runs as its own process on loopback (`python -m loraplane.serving.router`) with an admin key;
  * the operator runs as a process (its ServiceAccount) with the router's URL and key, the adapter mount
    root pointing at a local directory (where the tests write the adapters, laid out as on the store
    volume: <root>/store/<namespace>/<job>), and `trust_endpoint_annotation` on;
  * the ModelServer's Deployment gets KWOK pods (Running and Ready, with IPs that lead nowhere); the test
    annotates each with `loraplane.io/endpoint=<a vLLM URL>`, and the operator routes to that URL.
So the versions the operator resolves, the routes it publishes, the desired sets the router puts to the agents,
their loads and unloads and every request below are real; only the pods are simulated.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from loraplane.serving.vllm_process import VllmProcess
from tests.support.agent import agent_service, port_free_on, wait_up
from tests.support.kube import Kube, OperatorProcess, poll
from tests.support.ms_helpers import (
    Ms,
    RouterProcess,
    adapter_sha256,
    answer,
    chat,
    condition,
    modelserver,
    pinned,
    point_pods_at,
    selector,
    swapped_operator,
)
from tests.support.serving import MakeAdapter

pytestmark = pytest.mark.slow

MEDICAL = {"loraplane.io/adapter": "medical"}
SEEDS = itertools.count(100)  # every adapter of the module distinct (distinct weights, distinct sha256)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("adapter-mounts")


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    proc = RouterProcess(tmp_path_factory.mktemp("router") / "router.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        print(f"\nrouter log: {proc.log_path}")


@pytest.fixture(scope="module")
def agent_port(vllm_pair: list[VllmProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """An adapter agent next to each replica, all on one port (the operator's agent_port); the port."""
    hosts = [urlsplit(r.url).hostname or "" for r in vllm_pair]
    port = port_free_on(hosts)
    work = tmp_path_factory.mktemp("agents")
    agents = [
        agent_service(r.url, work / f"cache-{i}", work / f"agent-{i}.log", port=port, reconcile_interval_s=1)
        for i, r in enumerate(vllm_pair)
    ]
    try:
        for agent in agents:
            agent.start()
        for agent in agents:
            wait_up(agent)
        yield port
    finally:
        for agent in agents:
            agent.stop()
        print(f"\nadapter agent logs: {work}")


@pytest.fixture(scope="module")
def e2e_operator(
    operator: OperatorProcess,
    router: RouterProcess,
    store_root: Path,
    agent_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    env = {
        "LORAPLANE_OPERATOR_AGENT_PORT": str(agent_port),
        "LORAPLANE_OPERATOR_ROUTER_URL": router.url,
        "LORAPLANE_OPERATOR_ROUTER_ADMIN_KEY": router.admin_key,
        "LORAPLANE_OPERATOR_ADAPTER_MOUNT_ROOT": str(store_root),
        "LORAPLANE_OPERATOR_TRUST_ENDPOINT_ANNOTATION": "true",
        "LORAPLANE_OPERATOR_ROLLOUT_WAIT_SECONDS": "60",
    }
    yield from swapped_operator(operator, tmp_path_factory.mktemp("e2e-operator") / "operator.log", env)


@dataclass
class E2E:
    ms: Ms
    router: RouterProcess
    replicas: list[VllmProcess]
    store_root: Path
    make: MakeAdapter
    servers: list[str] = field(default_factory=list)

    def train(self, name: str, *, passed: bool = True, labels: dict[str, str] | None = None) -> str:
        """Write an adapter where the store volume would hold it, then let its FineTuneJob succeed with it."""
        path = self.make(name, next(SEEDS), self.store_root / "store" / self.ms.ns / name)
        sha = adapter_sha256(path)
        self.ms.finetunejob(name, sha, passed=passed, labels=labels)
        return sha

    def serve(self, name: str, adapters: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
        self.servers.append(name)
        self.ms.c.apply(
            modelserver(name, adapters, replicas=len(self.replicas), resources={"gpus": 0}, **spec), "-n", self.ms.ns
        )
        point_pods_at(self.ms, name, [r.url for r in self.replicas])
        return self.ms.wait_condition(name, "Ready", "True", timeout=240)

    def key(self, name: str) -> str:
        return f"{self.ms.ns}.{name}"

    def direct(self, replica: VllmProcess, version: str) -> str:
        status, body = chat(replica.url, version)
        assert status == 200, body
        return answer(body)

    def cleanup(self) -> None:
        """Delete the servers (their routes leave the router, so the next test may use the same replicas)."""
        for name in self.servers:
            self.ms.c.kubectl("delete", "ms", name, "-n", self.ms.ns, "--wait=true", "--timeout=120s", check=False)
            key = self.key(name)

            def gone(key: str = key) -> bool:
                return self.router.server(key) is None

            poll(f"route {key} removed", gone)


@pytest.fixture
def e2e(
    kube: Kube,
    e2e_operator: OperatorProcess,
    router: RouterProcess,
    replicas_up: list[VllmProcess],
    make_adapter: MakeAdapter,
    store_root: Path,
) -> Iterator[E2E]:
    env = E2E(Ms(kube.c, kube.ns), router, replicas_up, store_root, make_adapter)
    try:
        yield env
    finally:
        env.cleanup()


def version(public: str, sha: str) -> str:
    return f"{public}-{sha[:12]}"


class Traffic:
    """Steady traffic to one public model through the router, from a few client threads."""

    def __init__(self, url: str, model: str, clients: int = 3) -> None:
        self.url, self.model = url, model
        self.results: list[tuple[float, int, str]] = []  # (start time, status, version that answered or error)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            status, body = chat(self.url, self.model, max_tokens=4)
            with self.lock:
                self.results.append((started, status, str(body.get("model") or json.dumps(body)[:300])))

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=120)

    def snapshot(self) -> list[tuple[float, int, str]]:
        with self.lock:
            return list(self.results)

    def wait_for(self, wanted: str, count: int = 10, timeout: float = 120) -> None:
        """Until the last `count` answers all came from version `wanted`."""

        def check() -> bool:
            tail = self.snapshot()[-count:]
            return len(tail) == count and all(v == wanted for _, _, v in tail)

        poll(f"{count} answers in a row from {wanted}", check, timeout=timeout)


def test_promotion_gate_and_rollback_without_a_failed_request(e2e: E2E) -> None:
    v1 = e2e.train("med-v1", labels=MEDICAL)
    e2e.serve("qwen", [selector("medical")])
    status, body = chat(e2e.router.url, "medical")
    assert status == 200 and body["model"] == version("medical", v1), body
    # The router's answer is the adapter's (vLLM asked directly), not the base model's.
    assert answer(body) == e2e.direct(e2e.replicas[0], version("medical", v1))
    assert answer(body) != e2e.direct(e2e.replicas[0], "base")

    with Traffic(e2e.router.url, "medical") as traffic:
        traffic.wait_for(version("medical", v1), count=5)
        bad = e2e.train("med-bad", passed=False, labels=MEDICAL)  # fails its gate: never served
        v2 = e2e.train("med-v2", labels=MEDICAL)  # passes: promoted while traffic flows
        traffic.wait_for(version("medical", v2), count=20)
        obj = e2e.ms.wait_condition("qwen", "Ready", "True")
        assert obj["status"]["adapters"][0]["fineTuneJob"] == "med-v2"
        # Rollback: git pins the earlier run; traffic keeps flowing through the change.
        e2e.ms.c.apply(
            modelserver("qwen", [pinned("medical", "med-v1")], replicas=2, resources={"gpus": 0}), "-n", e2e.ms.ns
        )
        traffic.wait_for(version("medical", v1), count=20)
    results = traffic.snapshot()
    failed = [r for r in results if r[1] != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed during the version changes: {failed[:5]}"
    served = [v for _, _, v in results]
    assert version("medical", bad) not in served, "a run that failed its gate answered requests"
    assert {version("medical", v1), version("medical", v2)} <= set(served) and len(results) >= 60
    # The old version was unloaded once traffic left it (drained, then unloaded on every replica).
    state = poll(
        "med-v2 unloaded everywhere",
        lambda: (
            (s := e2e.router.server(e2e.key("qwen")))
            and all(version("medical", v2) not in r["loaded"] for r in s["replicas"])
            and s
        ),
    )
    assert all(version("medical", v1) in r["loaded"] for r in state["replicas"])


def test_canary_split_over_400_requests(e2e: E2E) -> None:
    stable, canary = e2e.train("fin-v1"), e2e.train("fin-v2")
    adapter = {**pinned("finance", "fin-v1"), "canary": {"source": {"fineTuneJob": "fin-v2"}, "weight": 30}}
    obj = e2e.serve("fin", [adapter])
    assert "canary fin-v2@" in obj["status"]["adapterSummary"]
    counts: dict[str, int] = {}
    for _ in range(400):
        status, body = chat(e2e.router.url, "finance", max_tokens=1)
        assert status == 200, body
        counts[body["model"]] = counts.get(body["model"], 0) + 1
    assert set(counts) == {version("finance", stable), version("finance", canary)}
    share = 100 * counts[version("finance", canary)] / 400
    assert 25 <= share <= 35, f"canary got {share:.1f}% of 400 requests, weight 30"


def test_a_restarted_replica_gets_its_adapters_back(e2e: E2E) -> None:
    sha = e2e.train("leg-v1")
    e2e.serve("legal", [pinned("legal", "leg-v1")])
    name = version("legal", sha)
    crashed = e2e.replicas[0]
    assert name in poll("loaded on replica 0", lambda: loaded_on(crashed))
    crashed.kill()
    crashed.start()  # a fresh process: no adapters
    poll("the adapter reloaded on the restarted replica", lambda: name in loaded_on(crashed), timeout=120)
    status, body = chat(crashed.url, name)  # answered by the restarted process itself
    assert status == 200, body
    for _ in range(10):
        status, body = chat(e2e.router.url, "legal")
        assert status == 200 and body["model"] == name, body
    obj = e2e.ms.wait(
        "legal",
        lambda o: (
            all(r["healthy"] and name in r["loaded"] for r in o["status"]["replicaAdapters"])
            and condition(o, "Ready").get("status") == "True"
        ),
        "both replicas hold the adapter again",
        timeout=60,
    )
    assert len(obj["status"]["replicaAdapters"]) == 2


def test_cross_namespace_adapters_are_refused_and_never_routed(e2e: E2E) -> None:
    e2e.ms.c.apply(
        modelserver("other", [pinned("secret", "their-job", namespace="kube-system")], replicas=1), "-n", e2e.ms.ns
    )
    e2e.servers.append("other")
    obj = e2e.ms.wait_condition("other", "Degraded", "True", "InvalidSpec")
    assert "not in spec.allowedNamespaces" in condition(obj, "Degraded")["message"]
    assert e2e.router.server(e2e.key("other")) is None
    status, body = chat(e2e.router.url, "secret")
    assert status == 404, body


def loaded_on(replica: VllmProcess) -> set[str]:
    import urllib.request

    try:
        with urllib.request.urlopen(replica.url + "/v1/models", timeout=5) as resp:
            cards = json.loads(resp.read())["data"]
    except OSError:
        return set()
    return {c["id"] for c in cards if c.get("parent")}
