"""The adapter agent next to a real vLLM replica, pulling from a real registry: what it loads answers as vLLM does,
what does not verify or does not fit is refused before vLLM sees it, its cache stays bounded, and a restarted
agent keeps the replica serving. Last, the router drives it: registry -> agent -> vLLM -> router answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loraplane.api.artifact import describe_adapter
from loraplane.api.oci import OciRef
from loraplane.api.result import TrainingResult
from loraplane.serving import oci_store
from loraplane.serving.oci_store import RegistryAccess, push
from loraplane.serving.router import PublicModel, ServerRoute
from loraplane.serving.vllm_process import VllmProcess
from tests.serving.fixtures import ServeRouter
from tests.serving.router_helpers import version
from tests.support.agent import agent_service, wait_up
from tests.support.bench import Service
from tests.support.kube import poll
from tests.support.registry import Registry
from tests.support.serving import BASE_NAME, PAIR_SPEC, MakeAdapter, tamper

pytestmark = pytest.mark.slow
PLAIN = RegistryAccess(plain_http=True)


def published(registry: Registry, adapter: Path, name: str) -> str:
    """Push `adapter` and return its pinned oci:// reference."""
    return str(push(adapter, OciRef.parse(f"oci://{registry.addr}/adapters/{name}:v1"), PLAIN).ref)


def load(agent: Service, name: str, path: str) -> httpx.Response:
    return httpx.post(agent.url + "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}, timeout=120)


def unload(agent: Service, name: str) -> httpx.Response:
    return httpx.post(agent.url + "/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60)


def answer(url: str, model: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "Hello there"}], "temperature": 0, "max_tokens": 8}
    resp = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


def residency(agent: Service) -> dict:
    return dict(httpx.get(agent.url + "/residency", timeout=10).json())


def listed(replica: VllmProcess) -> set[str]:
    cards = httpx.get(replica.url + "/v1/models", timeout=10).json()["data"]
    return {c["id"] for c in cards if c.get("parent")}


@pytest.fixture
def replica(replicas_up: list[VllmProcess]) -> Iterator[VllmProcess]:
    """One replica of the vLLM pair, with the adapters a test loaded unloaded afterwards."""
    before = listed(replicas_up[0])
    yield replicas_up[0]
    for name in listed(replicas_up[0]) - before:
        httpx.post(replicas_up[0].url + "/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60)


@pytest.fixture
def agent(replica: VllmProcess, tiny_base: Path, tmp_path: Path) -> Iterator[Service]:
    service = agent_service(
        replica.url,
        tmp_path / "cache",
        tmp_path / "agent.log",
        base_model=f"file://{tiny_base}",
        max_lora_rank=PAIR_SPEC.max_lora_rank,
        plain_http="true",
    )
    service.start()
    try:
        wait_up(service)
        yield service
    finally:
        service.stop()


def test_an_oci_adapter_is_pulled_verified_loaded_and_reported(
    agent: Service, replica: VllmProcess, oci_registry: Registry, make_adapter: MakeAdapter, tmp_path: Path
) -> None:
    adapter = make_adapter("oci-a", 21, tmp_path / "a")
    ref = published(oci_registry, adapter, "oci-a")
    resp = load(agent, "oci-a", ref)
    assert resp.status_code == 200, resp.text
    assert "oci-a" in listed(replica)
    # vLLM loaded the verified copy in the agent's cache, and it answers as the same adapter from its directory
    (entry,) = residency(agent)["adapters"]
    assert entry["source"] == ref and entry["digest"] == OciRef.parse(ref).digest
    assert Path(entry["path"]).parent == tmp_path / "cache"
    assert (Path(entry["path"]) / "result.json").read_bytes() == (adapter / "result.json").read_bytes()
    via_oci = answer(replica.url, "oci-a")
    assert load(agent, "oci-a-dir", str(adapter)).status_code == 200  # a plain path goes to vLLM unchanged
    assert answer(replica.url, "oci-a-dir") == via_oci
    models = httpx.get(agent.url + "/v1/models", timeout=10).json()
    assert {"oci-a", "oci-a-dir"} <= {m["id"] for m in models["data"]}
    metrics = httpx.get(agent.url + "/metrics", timeout=10).text
    assert 'loraplane_agent_pulls_total{result="ok"} 1.0' in metrics
    assert "loraplane_agent_adapters_loaded 2.0" in metrics
    assert unload(agent, "oci-a").status_code == 200 and "oci-a" not in listed(replica)
    assert [a["name"] for a in residency(agent)["adapters"]] == ["oci-a-dir"]


def test_tampered_and_wrong_base_artifacts_are_refused_before_vllm_sees_them(
    agent: Service,
    replica: VllmProcess,
    oci_registry: Registry,
    make_adapter: MakeAdapter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tampered = tamper(make_adapter("oci-evil", 22, tmp_path / "evil"))
    monkeypatch.setattr(oci_store, "verify", lambda _dir: [])  # another client pushes what ours would refuse
    evil = published(oci_registry, tampered, "oci-evil")
    monkeypatch.undo()
    resp = load(agent, "oci-evil", evil)
    assert resp.status_code == 400, resp.text
    assert "adapter_model.safetensors: sha256 mismatch" in resp.json()["error"]["message"]

    # The same shape, trained on another base: today vLLM would load it silently.
    other = make_adapter("oci-other", 23, tmp_path / "other")
    result = TrainingResult.read(other)
    assert result is not None and result.base_model is not None
    result.base_model.uri = "hf://HuggingFaceTB/SmolLM2-135M-Instruct"
    result.write(other)
    resp = load(agent, "oci-other", published(oci_registry, other, "oci-other"))
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]["message"]
    # known from the manifest our push annotates: refused before a single blob is downloaded
    assert "its base model hf://HuggingFaceTB/SmolLM2-135M-Instruct (manifest annotation) differs from" in message

    # A foreign artifact, consistent and of the right base, whose PEFT settings vLLM cannot serve (DoRA)
    dora = make_adapter("oci-dora", 24, tmp_path / "dora")
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    result = TrainingResult.read(dora)
    assert result is not None
    result.adapter = describe_adapter(dora, r=result.adapter.r if result.adapter else None)
    result.write(dora)
    resp = load(agent, "oci-dora", published(oci_registry, dora, "oci-dora"))
    assert resp.status_code == 400, resp.text
    assert "adapter_config.json.useDora: vLLM cannot serve DoRA adapters" in resp.json()["error"]["message"]

    assert not {"oci-evil", "oci-other", "oci-dora"} & listed(replica)
    assert residency(agent)["adapters"] == []
    # only the verified DoRA artifact is cached (unused): the wrong-base one was never downloaded
    assert [e["usedBy"] for e in residency(agent)["cache"]["entries"]] == [[]]
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert load(agent, "oci-x", f"oci://{oci_registry.addr}/adapters/oci-a:v1").status_code == 400  # not pinned


def test_the_cache_stays_bounded_and_never_evicts_what_is_loaded(
    replica: VllmProcess, oci_registry: Registry, make_adapter: MakeAdapter, tiny_base: Path, tmp_path: Path
) -> None:
    adapters = [make_adapter(f"oci-c{i}", 30 + i, tmp_path / f"c{i}") for i in range(3)]
    size = sum(p.stat().st_size for p in adapters[0].rglob("*") if p.is_file())
    refs = [published(oci_registry, a, f"oci-c{i}") for i, a in enumerate(adapters)]
    service = agent_service(
        replica.url, tmp_path / "cache", tmp_path / "agent.log", cache_limit_bytes=int(size * 1.5), plain_http="true"
    )
    service.start()
    try:
        wait_up(service)
        assert load(service, "oci-c0", refs[0]).status_code == 200
        full = load(service, "oci-c1", refs[1])  # c0 is loaded: no room, and c0 keeps serving
        assert full.status_code == 507 and "cache is full" in full.json()["error"]["message"], full.text
        assert answer(replica.url, "oci-c0")
        assert unload(service, "oci-c0").status_code == 200
        assert load(service, "oci-c2", refs[2]).status_code == 200  # c0 unloaded: evicted for c2
        cache = residency(service)["cache"]
        assert [e["digest"] for e in cache["entries"]] == [OciRef.parse(refs[2]).digest]
        assert cache["evictions"] == 1 and cache["usedBytes"] <= cache["limitBytes"]
        assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [OciRef.parse(refs[2]).digest[7:]]
    finally:
        service.stop()


def test_a_restarted_agent_keeps_the_replica_serving_and_its_cache(
    agent: Service, replica: VllmProcess, oci_registry: Registry, make_adapter: MakeAdapter, tmp_path: Path
) -> None:
    ref = published(oci_registry, make_adapter("oci-r", 41, tmp_path / "r"), "oci-r")
    assert load(agent, "oci-r", ref).status_code == 200
    before = answer(replica.url, "oci-r")
    assert agent.proc is not None
    agent.proc.kill()
    agent.proc.wait(timeout=30)
    assert answer(replica.url, "oci-r") == before  # vLLM never depended on the agent to answer
    # a stray staging directory of a pull the kill interrupted is cleaned up at start
    (tmp_path / "cache" / ".stale.x").mkdir()
    agent.start()
    wait_up(agent)
    cache = residency(agent)["cache"]
    assert [e["digest"] for e in cache["entries"]] == [OciRef.parse(ref).digest]
    assert not (tmp_path / "cache" / ".stale.x").exists()
    again = load(agent, "oci-r", ref)  # what the router's next reconcile does
    assert again.status_code == 400 and "already been loaded" in again.text  # vLLM kept it through the restart
    metrics = httpx.get(agent.url + "/metrics", timeout=10).text
    assert "loraplane_agent_cache_hits_total 1.0" in metrics and 'result="ok"' not in metrics  # no new download
    assert [a["name"] for a in residency(agent)["adapters"]] == ["oci-r"]  # resident again
    assert answer(replica.url, "oci-r") == before


def test_the_router_loads_oci_versions_through_each_replicas_agent(
    agent: Service,
    replica: VllmProcess,
    oci_registry: Registry,
    make_adapter: MakeAdapter,
    serve_router: ServeRouter,
    tmp_path: Path,
) -> None:
    adapter = make_adapter("oci-routed", 51, tmp_path / "routed")
    ref = published(oci_registry, adapter, "oci-routed")
    pinned = version("oci-routed", adapter).model_copy(update={"path": ref})
    agent_port = int(agent.url.rsplit(":", 1)[1])
    route = ServerRoute(
        base_model=BASE_NAME,
        replicas=[replica.url],
        adapters=[PublicModel(name="routed", versions=[pinned])],
        agent_port=agent_port,
    )
    with serve_router({"tiny": route}) as router:
        router.wait_routable("routed")
        assert router.answer("routed", max_tokens=8) == answer(replica.url, "oci-routed")
        status = router.status("tiny")
        assert status["replicas"][0]["loaded"] == ["oci-routed"], status
    entry = poll("the agent's residency", lambda: residency(agent)["adapters"], timeout=30)
    assert entry[0]["source"] == ref


def test_a_wrong_path_is_vllms_own_error(agent: Service, tmp_path: Path) -> None:
    resp = load(agent, "nothing", str(tmp_path / "missing"))
    assert resp.status_code in (400, 404), resp.text
    assert resp.json()  # vLLM's answer, passed through
    assert residency(agent)["adapters"] == []
