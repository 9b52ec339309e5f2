"""The adapter agent next to a real vLLM replica, pulling from a real registry, told the replica's desired versions
as the router tells it: what it loads answers as vLLM does; what does not verify or does not fit is refused before
vLLM sees it, named in its residency; it drains on vLLM's own view before unloading; its cache stays bounded; a
restarted vLLM is refilled and a restarted agent keeps the replica serving. Last, the router drives it:
registry -> agent -> vLLM -> router answer, the router loading nothing itself."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from loraplane.api.artifact import describe_adapter
from loraplane.api.oci import OciRef
from loraplane.api.result import TrainingResult
from loraplane.api.s3 import S3Ref
from loraplane.serving import oci_store, s3_store
from loraplane.serving.oci_store import RegistryAccess, push
from loraplane.serving.router import PublicModel, ServerRoute
from loraplane.serving.vllm_process import VllmProcess
from tests.serving.fixtures import ServeRouter
from tests.serving.router_helpers import version
from tests.support.agent import agent_service, wait_up
from tests.support.bench import Service
from tests.support.kube import poll
from tests.support.registry import Registry
from tests.support.s3 import S3Server, s3_server
from tests.support.serving import BASE_NAME, PAIR_SPEC, MakeAdapter, tamper

pytestmark = pytest.mark.slow
PLAIN = RegistryAccess(plain_http=True)


def published(registry: Registry, adapter: Path, name: str) -> str:
    """Push `adapter` and return its pinned oci:// reference."""
    return str(push(adapter, OciRef.parse(f"oci://{registry.addr}/adapters/{name}:v1"), PLAIN).ref)


def put(agent: Service, *adapters: tuple[str, str]) -> dict[str, Any]:
    """PUT the replica's desired set (name, source) as the router does; the residency after that round."""
    body = {"adapters": [{"name": name, "source": source} for name, source in adapters]}
    resp = httpx.put(agent.url + "/v1/desired", json=body, timeout=180)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def names(residency: dict[str, Any]) -> list[str]:
    return [a["name"] for a in residency["adapters"]]


def answer(url: str, model: str) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": "Hello there"}], "temperature": 0, "max_tokens": 8}
    resp = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


def residency(agent: Service) -> dict[str, Any]:
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
        reconcile_interval_s=1,
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
    state = put(agent, ("oci-a", ref), ("oci-a-dir", str(adapter)))
    assert state["errors"] == {} and state["healthy"] and state["desired"] == ["oci-a", "oci-a-dir"], state
    assert names(state) == ["oci-a", "oci-a-dir"] and {"oci-a", "oci-a-dir"} <= listed(replica)
    # vLLM loaded the verified copy in the agent's cache, and it answers as the same adapter from its directory
    entry = state["adapters"][0]
    assert entry["source"] == ref and entry["digest"] == OciRef.parse(ref).digest
    assert Path(entry["path"]).parent == tmp_path / "cache"
    assert (Path(entry["path"]) / "result.json").read_bytes() == (adapter / "result.json").read_bytes()
    assert state["adapters"][1]["path"] == str(adapter)  # a directory goes to vLLM as it is, once it verified
    assert answer(replica.url, "oci-a-dir") == answer(replica.url, "oci-a")
    metrics = httpx.get(agent.url + "/metrics", timeout=10).text
    assert 'loraplane_agent_pulls_total{result="ok"} 1.0' in metrics
    assert "loraplane_agent_adapters_loaded 2.0" in metrics
    # what is no longer desired is unloaded; its cache entry stays, unused, for a later rollback
    state = put(agent, ("oci-a-dir", str(adapter)))
    assert names(state) == ["oci-a-dir"] and "oci-a" not in listed(replica)
    assert [e["usedBy"] for e in state["cache"]["entries"]] == [[]]
    assert names(residency(agent)) == ["oci-a-dir"]


def test_what_does_not_verify_or_fit_is_refused_before_vllm_sees_it(
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

    # The same shape, trained on another base: vLLM alone would load it silently.
    other = make_adapter("oci-other", 23, tmp_path / "other")
    result = TrainingResult.read(other)
    assert result is not None and result.base_model is not None
    result.base_model.uri = "hf://HuggingFaceTB/SmolLM2-135M-Instruct"
    result.write(other)

    # A foreign artifact, consistent and of the right base, whose PEFT settings vLLM cannot serve (DoRA)
    dora = make_adapter("oci-dora", 24, tmp_path / "dora")
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    result = TrainingResult.read(dora)
    assert result is not None
    result.adapter = describe_adapter(dora, r=result.adapter.r if result.adapter else None)
    result.write(dora)

    good = make_adapter("oci-good", 25, tmp_path / "good")
    state = put(
        agent,
        ("oci-evil", evil),
        ("oci-other", published(oci_registry, other, "oci-other")),
        ("oci-dora", published(oci_registry, dora, "oci-dora")),
        ("oci-x", f"oci://{oci_registry.addr}/adapters/oci-good:v1"),  # a tag: not a version
        ("dir-evil", str(tamper(make_adapter("dir-evil", 26, tmp_path / "dir-evil")))),
        ("dir-missing", str(tmp_path / "missing")),
        ("dir-dora", str(dora)),  # consistent files: the fit is checked for a directory too
        ("oci-good", published(oci_registry, good, "oci-good")),
    )
    errors = state["errors"]
    assert "adapter_model.safetensors: sha256 mismatch" in errors["oci-evil"]
    # known from the manifest our push annotates: refused before a single blob is downloaded
    assert (
        "its base model hf://HuggingFaceTB/SmolLM2-135M-Instruct (manifest annotation) differs from"
        in (errors["oci-other"])
    )
    assert "adapter_config.json.useDora: vLLM cannot serve DoRA adapters" in errors["oci-dora"]
    assert "by digest" in errors["oci-x"]
    assert "adapter_model.safetensors" in errors["dir-evil"] and "does not match its result.json" in errors["dir-evil"]
    assert "does not exist" in errors["dir-missing"]
    assert "adapter_config.json.useDora: vLLM cannot serve DoRA adapters" in errors["dir-dora"]
    # the others' refusals cost the good one nothing
    assert set(errors) == {"oci-evil", "oci-other", "oci-dora", "oci-x", "dir-evil", "dir-missing", "dir-dora"}
    assert names(state) == ["oci-good"] and listed(replica) == {"oci-good"}
    # only the verified DoRA and good artifacts are cached: the wrong-base one was never downloaded
    assert sorted(len(e["usedBy"]) for e in state["cache"]["entries"]) == [0, 1]
    assert len(list((tmp_path / "cache").iterdir())) == 2
    metrics = httpx.get(agent.url + "/metrics", timeout=10).text
    assert "loraplane_agent_adapters_failing 7.0" in metrics

    # a malformed desired set is refused whole, naming the field, and changes nothing
    resp = httpx.put(agent.url + "/v1/desired", json={"adapters": [{"name": "x"}]}, timeout=30)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "adapters.0.source", resp.text
    resp = httpx.put(
        agent.url + "/v1/desired", json={"adapters": [{"name": "x", "source": "/a"}, {"name": "x", "source": "/b"}]}
    )
    assert resp.status_code == 400 and "appear more than once" in resp.json()["error"]["message"], resp.text
    assert names(residency(agent)) == ["oci-good"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("versitygw")) as server:
        yield server


def test_an_s3_version_is_pulled_pinned_verified_and_loaded(
    replica: VllmProcess, s3: S3Server, tiny_base: Path, make_adapter: MakeAdapter, tmp_path: Path
) -> None:
    def pushed(adapter: Path, prefix: str) -> str:
        sha = s3_store.push(adapter, S3Ref.parse(f"s3://{s3.bucket}/{prefix}"), s3.access())
        return f"s3://{s3.bucket}/{prefix}@sha256:{sha}"

    good = make_adapter("s3-good", 41, tmp_path / "good")
    good_uri = pushed(good, "runs/s3-good")
    replaced = pushed(make_adapter("s3-new", 42, tmp_path / "new"), "runs/s3-replaced")
    tampered_uri = pushed(make_adapter("s3-evil", 43, tmp_path / "evil"), "runs/s3-evil")
    weights = S3Ref.parse(tampered_uri).key("adapter_model.safetensors")
    s3.client().put_object(Bucket=s3.bucket, Key=weights, Body=b"\0" * 64)  # replaced behind the store's back
    # the agent as in a pod: the endpoint and the login file from the AWS variables the operator sets
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(s3.credentials_file(tmp_path / "s3" / "credentials")),
        "AWS_ENDPOINT_URL_S3": s3.endpoint,
    }
    service = agent_service(
        replica.url,
        tmp_path / "cache",
        tmp_path / "agent.log",
        env=env,
        base_model=f"file://{tiny_base}",
        max_lora_rank=PAIR_SPEC.max_lora_rank,
        reconcile_interval_s=1,
    )
    service.start()
    try:
        wait_up(service)
        state = put(
            service,
            ("s3-good", good_uri),
            ("s3-dir", str(good)),
            ("s3-replaced", replaced.rsplit("@", 1)[0] + "@sha256:" + "0" * 64),  # the pin names another version
            ("s3-evil", tampered_uri),
            ("s3-loose", f"s3://{s3.bucket}/runs/s3-good"),  # a location, not a version
        )
        errors = state["errors"]
        assert set(errors) == {"s3-replaced", "s3-evil", "s3-loose"}, errors
        assert "expected " + "0" * 64 in errors["s3-replaced"]
        assert "adapter_model.safetensors" in errors["s3-evil"]
        assert "not by location" in errors["s3-loose"]
        assert names(state) == ["s3-dir", "s3-good"] and {"s3-good", "s3-dir"} <= listed(replica)
        entry = next(a for a in state["adapters"] if a["name"] == "s3-good")
        assert entry["digest"] == "sha256:" + good_uri.rsplit(":", 1)[1] and entry["source"] == good_uri
        assert Path(entry["path"]).parent == tmp_path / "cache"
        assert (Path(entry["path"]) / "adapter_model.safetensors").read_bytes() == (
            good / "adapter_model.safetensors"
        ).read_bytes()
        assert answer(replica.url, "s3-good") == answer(replica.url, "s3-dir")
        assert len(list((tmp_path / "cache").iterdir())) == 1, "nothing refused is left in the cache"
    finally:
        service.stop()


def test_the_cache_stays_bounded_and_never_evicts_what_is_loaded(
    replica: VllmProcess, oci_registry: Registry, make_adapter: MakeAdapter, tmp_path: Path
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
        assert names(put(service, ("oci-c0", refs[0]))) == ["oci-c0"]
        state = put(service, ("oci-c0", refs[0]), ("oci-c1", refs[1]))  # c0 is loaded: no room, c0 keeps serving
        assert "cache is full" in state["errors"]["oci-c1"] and names(state) == ["oci-c0"], state
        assert answer(replica.url, "oci-c0")

        # c0 replaced by c2: c0 is unloaded, then evicted for c2 (the router puts the set again until it holds)
        def swapped() -> dict[str, Any] | None:
            state = put(service, ("oci-c2", refs[2]))
            return state if names(state) == ["oci-c2"] else None

        state = poll("c2 loaded", swapped)
        cache = state["cache"]
        assert [e["digest"] for e in cache["entries"]] == [OciRef.parse(refs[2]).digest]
        assert cache["evictions"] == 1 and cache["usedBytes"] <= cache["limitBytes"]
        assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [str(OciRef.parse(refs[2]).digest)[7:]]
    finally:
        service.stop()


def test_an_adapter_is_drained_on_vllms_view_before_it_is_unloaded(
    agent: Service, replica: VllmProcess, oci_registry: Registry, make_adapter: MakeAdapter, tmp_path: Path
) -> None:
    ref = published(oci_registry, make_adapter("oci-d", 61, tmp_path / "d"), "oci-d")
    assert names(put(agent, ("oci-d", ref))) == ["oci-d"]
    # a request straight to vLLM (no router in the way: the agent learns it from vLLM's metrics)
    body = {
        "model": "oci-d",
        "prompt": "Once",
        "max_tokens": 240,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks: list[dict[str, Any]] = []
    with httpx.stream("POST", replica.url + "/v1/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        lines = (json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {"))
        chunks.append(next(lines))
        with ThreadPoolExecutor(1) as pool:
            emptied = pool.submit(put, agent)  # the router stopped naming oci-d, mid-answer
            chunks.extend(lines)
            ended = time.monotonic()
            state = emptied.result(timeout=120)
            unloaded = time.monotonic()
    assert chunks[-1]["usage"]["completion_tokens"] == 240  # the request in flight ran to its end
    assert names(state) == [] and "oci-d" not in listed(replica)
    assert unloaded >= ended  # the put answered after the unload, which waited for the request
    log = (tmp_path / "agent.log").read_text()
    assert "drain: oci-d has requests in vLLM" in log and "drain: oci-d idle in vLLM after" in log, log


def test_a_restarted_vllm_is_refilled_by_the_agent_alone(
    agent: Service, replica: VllmProcess, oci_registry: Registry, make_adapter: MakeAdapter, tmp_path: Path
) -> None:
    ref = published(oci_registry, make_adapter("oci-v", 71, tmp_path / "v"), "oci-v")
    assert names(put(agent, ("oci-v", ref))) == ["oci-v"]
    before = answer(replica.url, "oci-v")
    first = residency(agent)["adapters"][0]["loadedAt"]
    replica.restart()
    # nobody puts anything: the agent's own round finds vLLM empty and loads it again, from its cache
    again = poll(
        "oci-v loaded again", lambda: (r := residency(agent))["adapters"] and r["adapters"][0]["loadedAt"] > first
    )
    assert again and "oci-v" in listed(replica)
    assert answer(replica.url, "oci-v") == before
    metrics = httpx.get(agent.url + "/metrics", timeout=10).text
    assert (
        'loraplane_agent_pulls_total{result="ok"} 1.0' in metrics and "loraplane_agent_cache_hits_total 1.0" in metrics
    )


def test_a_restarted_agent_keeps_the_replica_serving_and_its_cache(
    agent: Service, replica: VllmProcess, oci_registry: Registry, make_adapter: MakeAdapter, tmp_path: Path
) -> None:
    ref = published(oci_registry, make_adapter("oci-r", 41, tmp_path / "r"), "oci-r")
    assert names(put(agent, ("oci-r", ref))) == ["oci-r"]
    before = answer(replica.url, "oci-r")
    assert agent.proc is not None
    agent.proc.kill()
    agent.proc.wait(timeout=30)
    assert answer(replica.url, "oci-r") == before  # vLLM never depended on the agent to answer
    # a stray staging directory of a pull the kill interrupted is cleaned up at start
    (tmp_path / "cache" / ".stale.x").mkdir()
    agent.start()
    wait_up(agent)
    assert not (tmp_path / "cache" / ".stale.x").exists()
    # before anyone puts a set, the new agent adopts what vLLM holds and unloads nothing
    adopted = poll("oci-r adopted", lambda: (r := residency(agent))["adapters"] and r)
    assert adopted["desired"] is None and names(adopted) == ["oci-r"]
    assert [(e["digest"], e["usedBy"]) for e in adopted["cache"]["entries"]] == [(OciRef.parse(ref).digest, ["oci-r"])]
    state = put(agent, ("oci-r", ref))  # what the router's next round does
    assert names(state) == ["oci-r"] and state["errors"] == {}
    metrics = httpx.get(agent.url + "/metrics", timeout=10).text
    assert 'result="ok"' not in metrics  # no new download
    assert answer(replica.url, "oci-r") == before


def test_the_router_tells_each_replicas_agent_and_loads_nothing_itself(
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
        state = residency(agent)
        assert state["desired"] == ["oci-routed"] and state["adapters"][0]["source"] == ref
        # a wrong version named in the route: the agent's refusal is the router's status of that replica
        wrong = pinned.model_copy(update={"name": "oci-wrong", "sha256": "0" * 64, "weight": 10})
        both = PublicModel(name="routed", versions=[pinned.model_copy(update={"weight": 90}), wrong])
        assert router.put("tiny", route.model_copy(update={"adapters": [both]})).status_code == 200
        errors = poll("the refusal in the router's status", lambda: router.status("tiny")["replicas"][0]["errors"])
        assert "expected " + "0" * 64 in errors["oci-wrong"], errors
        assert router.status("tiny")["replicas"][0]["loaded"] == ["oci-routed"]
