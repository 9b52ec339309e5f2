"""The router against two real vLLM replicas of the tiny base model with three (and more) real LoRA adapters."""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from loraplane.serving.router import PublicModel, ServerRoute
from loraplane.serving.vllm_process import VllmProcess
from tests.serving.fixtures import ServeRouter
from tests.serving.router_helpers import Router, route, version
from tests.serving.router_helpers import openai_error as error
from tests.support.kube import free_port, poll
from tests.support.serving import BASE_NAME, MakeAdapter

pytestmark = pytest.mark.slow
PROMPTS = ["Hello there", "Tell me a story", "What is the code?"]


def direct(replica: VllmProcess, model: str, content: str, max_tokens: int = 12) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    resp = httpx.post(replica.url + "/v1/chat/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


@pytest.fixture
def served(replicas_up: list[VllmProcess], tiny_adapters: dict[str, Path], serve_router: ServeRouter) -> Any:
    """The router with alpha, beta and gamma on both replicas, all routable."""
    with serve_router({"tiny": route([r.url for r in replicas_up], tiny_adapters)}) as router:
        router.wait_routable(BASE_NAME, *tiny_adapters)
        yield router


def test_each_adapter_answers_as_vllm_does_and_unlike_the_base(
    served: Router, replicas_up: list[VllmProcess], tiny_adapters: dict[str, Path]
) -> None:
    for prompt in PROMPTS:
        base = served.answer(BASE_NAME, prompt)
        assert base == direct(replicas_up[0], BASE_NAME, prompt)
        for name in tiny_adapters:
            through_router = served.answer(name, prompt)
            assert through_router == direct(replicas_up[0], name, prompt) == direct(replicas_up[1], name, prompt)
            assert through_router != base, f"{name} answers like the base model"
    models = served.http.get("/v1/models").json()["data"]
    cards = {m["id"]: m for m in models}
    assert cards[BASE_NAME]["parent"] is None
    assert all(cards[name]["parent"] == BASE_NAME and cards[name]["root"] == BASE_NAME for name in tiny_adapters)


def test_streaming_through_the_openai_client(served: Router, replicas_up: list[VllmProcess]) -> None:
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="beta",
        messages=[{"role": "user", "content": "Tell me a story"}],
        temperature=0,
        max_tokens=16,
        stream=True,
    )
    chunks = list(stream)
    assert all(chunk.choices for chunk in chunks), "the usage event the router asked vLLM for is not passed on"
    pieces = [chunk.choices[0].delta.content or "" for chunk in chunks]
    assert len([p for p in pieces if p]) > 3, pieces
    streamed_tokens = served.metric("loraplane_router_tokens_total", model="beta", kind="completion")
    assert streamed_tokens >= len([p for p in pieces if p]), "a streamed answer's tokens are counted"
    assert "".join(pieces) == served.answer("beta", "Tell me a story", max_tokens=16)
    completion = client.completions.create(model="gamma", prompt="Once upon", max_tokens=8, temperature=0)
    assert completion.choices[0].text == direct_completion(replicas_up[0], "gamma", "Once upon", 8)
    assert completion.choices[0].text != direct_completion(replicas_up[0], BASE_NAME, "Once upon", 8)


def direct_completion(replica: VllmProcess, model: str, prompt: str, max_tokens: int) -> str:
    body = {"model": model, "prompt": prompt, "temperature": 0, "max_tokens": max_tokens}
    resp = httpx.post(replica.url + "/v1/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["text"])


def test_a_new_adapter_becomes_routable_without_restarting(
    served: Router, replicas_up: list[VllmProcess], tiny_adapters: dict[str, Path], make_adapter: MakeAdapter
) -> None:
    assert served.chat("delta").status_code == 404
    delta = make_adapter("delta", 4)
    resp = served.put("tiny", route([r.url for r in replicas_up], {**tiny_adapters, "delta": delta}))
    assert resp.status_code == 200, resp.text
    served.wait_routable("delta", timeout=120)
    assert served.answer("delta") == direct(replicas_up[1], "delta", "Hello there")
    assert {"delta"} <= set(served.status("tiny")["replicas"][0]["loaded"])


def test_killing_a_replica_mid_load_loses_no_request_and_it_gets_its_adapters_back(
    served: Router, replicas_up: list[VllmProcess], tiny_adapters: dict[str, Path]
) -> None:
    names = [BASE_NAME, *tiny_adapters]
    results: list[int] = []
    started = threading.Event()

    def one(i: int) -> int:
        started.set()
        return served.chat(names[i % len(names)], PROMPTS[i % 3], max_tokens=24).status_code

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(one, i) for i in range(48)]
        started.wait(30)
        poll("traffic flowing on both replicas", lambda: answered(served) >= 8, timeout=60, interval=0.05)
        replicas_up[0].kill()
        results = [f.result() for f in futures]
    assert Counter(results) == {200: 48}, Counter(results)
    moved = served.metric("loraplane_router_retries_total", model=BASE_NAME) + sum(
        served.metric("loraplane_router_retries_total", model=name) for name in tiny_adapters
    )
    assert moved >= 1, "some request was moved off the killed replica"

    replicas_up[0].restart()
    poll(
        "replica 0 healthy again with every adapter reloaded",
        lambda: (r := served.status("tiny")["replicas"][0])["healthy"] and set(tiny_adapters) <= set(r["loaded"]),
        timeout=300,
    )
    assert served.answer("alpha") == direct(replicas_up[0], "alpha", "Hello there")


def answered(router: Router) -> float:
    """Requests the router has finished so far (from its own metrics)."""
    metrics = router.http.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("loraplane_router_requests_total")
    )


def test_a_version_change_and_an_unload_under_traffic_fail_no_request(
    served: Router, replicas_up: list[VllmProcess], tiny_adapters: dict[str, Path], make_adapter: MakeAdapter
) -> None:
    replicas = [r.url for r in replicas_up]
    v1 = PublicModel(name="gamma", versions=[version("gamma", tiny_adapters["gamma"])])
    others = [m for m in route(replicas, tiny_adapters).adapters if m.name != "gamma"]
    v2_path = make_adapter("gamma-v2", 7)
    stop = threading.Event()
    statuses: Counter[int] = Counter()
    served_by: Counter[str] = Counter()

    def traffic() -> None:
        while not stop.is_set():
            resp = served.chat("gamma", max_tokens=8)
            statuses[resp.status_code] += 1
            if resp.status_code == 200:
                served_by[resp.json()["model"]] += 1

    with ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(traffic) for _ in range(4)]
        poll("traffic flowing", lambda: statuses[200] >= 8, timeout=60)
        # stage v2 (weight 0: loaded, no traffic), then shift all traffic to it and drop v1
        staged = PublicModel(name="gamma", versions=[*v1.versions, version("gamma-v2", v2_path, weight=0)])
        served.put("tiny", ServerRoute(base_model=BASE_NAME, replicas=replicas, adapters=[*others, staged]))
        poll(
            "v2 loaded everywhere",
            lambda: all("gamma-v2" in r["loaded"] for r in served.status("tiny")["replicas"]),
            timeout=120,
        )
        final = PublicModel(name="gamma", versions=[version("gamma-v2", v2_path)])
        served.put("tiny", ServerRoute(base_model=BASE_NAME, replicas=replicas, adapters=[*others, final]))
        poll(
            "v1 drained and unloaded everywhere",
            lambda: all("gamma" not in r["loaded"] for r in served.status("tiny")["replicas"]),
            timeout=120,
        )
        after = served_by["gamma-v2"]
        poll("traffic on v2", lambda: served_by["gamma-v2"] >= after + 8, timeout=60)
        stop.set()
        for worker in workers:
            worker.result()
    assert set(statuses) == {200}, statuses
    assert served_by["gamma"] > 0 and served_by["gamma-v2"] > 0, served_by


def test_canary_weight_and_sticky_sessions(
    replicas_up: list[VllmProcess], tiny_adapters: dict[str, Path], serve_router: ServeRouter
) -> None:
    canary = PublicModel(
        name="medical",
        versions=[
            version("alpha", tiny_adapters["alpha"], weight=70),
            version("beta", tiny_adapters["beta"], weight=30),
        ],
    )
    with serve_router(
        {"tiny": ServerRoute(base_model=BASE_NAME, replicas=[r.url for r in replicas_up], adapters=[canary])}
    ) as router:
        router.wait_routable("medical")
        poll(
            "both versions loaded",
            lambda: all({"alpha", "beta"} <= set(r["loaded"]) for r in router.status("tiny")["replicas"]),
            timeout=120,
        )
        with ThreadPoolExecutor(8) as pool:
            models = list(pool.map(lambda _: router.chat("medical", max_tokens=1).json()["model"], range(400)))
        share = Counter(models)["beta"] / len(models)
        assert abs(share - 0.30) <= 0.05, Counter(models)
        for session in ("s-1", "s-2", "s-3"):
            seen = {
                router.chat("medical", max_tokens=1, headers={"x-session-id": session}).json()["model"]
                for _ in range(15)
            }
            assert len(seen) == 1, f"session {session} moved between versions: {seen}"


def test_error_paths_answer_in_openai_shape(
    replicas_up: list[VllmProcess], tiny_adapters: dict[str, Path], tmp_path: Path, serve_router: ServeRouter
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"k-alpha": {"models": ["alpha", BASE_NAME]}, "k-all": {"models": ["*"]}}))
    dead = f"http://127.0.0.1:{free_port()}"
    routes = {
        "tiny": route([r.url for r in replicas_up], tiny_adapters),
        "gone": ServerRoute(base_model="gone-base", replicas=[dead]),
    }
    with serve_router(routes, api_keys_file=keys, max_body_bytes=4096) as router:
        user = {"Authorization": "Bearer k-alpha"}
        poll("alpha routable", lambda: router.chat("alpha", max_tokens=1, headers=user).status_code == 200, timeout=240)

        assert error(router.chat("alpha"), 401)["type"] == "authentication_error"
        assert error(router.chat("alpha", headers={"Authorization": "Bearer nope"}), 401)
        assert error(router.chat("beta", headers=user), 404)["code"] == "model_not_found", "not allowed looks unknown"
        assert error(router.chat("no-such-model", headers=user), 404)["param"] == "model"
        bad_json = router.http.post(
            "/v1/chat/completions", content=b"{oops", headers={**user, "content-type": "application/json"}
        )
        assert "not valid JSON" in error(bad_json, 400)["message"]
        no_messages = router.http.post("/v1/chat/completions", json={"model": "alpha"}, headers=user)
        assert error(no_messages, 400)["param"] == "messages"
        huge = router.chat("alpha", "x" * 5000, headers=user)
        assert error(huge, 413)["code"] == "request_too_large"
        all_key = {"Authorization": "Bearer k-all"}
        down = router.chat("gone-base", headers=all_key)
        assert error(down, 503)["code"] == "no_healthy_replica" and int(down.headers["retry-after"]) >= 1
        ids = {m["id"] for m in router.http.get("/v1/models", headers=user).json()["data"]}
        assert ids == {"alpha", BASE_NAME}
        # admin: never with a user key
        assert error(router.admin("GET", "", key="k-all"), 403)["type"] == "permission_error"
        assert error(router.admin("GET", "", key=None), 401)
        assert error(router.admin("PUT", "/x", {"base_model": "b", "adapters": "nope"}), 400)["param"] == "adapters"
        clash = ServerRoute(base_model=BASE_NAME, replicas=[dead])
        assert error(router.put("other", clash), 409)["code"] == "conflict"
        assert router.http.get("/healthz").status_code == 200 and router.http.get("/readyz").status_code == 200
        metrics = router.http.get("/metrics").text
        assert 'loraplane_router_requests_total{model="alpha",status="200",version="alpha"}' in metrics
        assert 'loraplane_router_requests_total{model="-",status="401",version="-"}' in metrics

    with serve_router({"tiny": route([r.url for r in replicas_up], tiny_adapters)}, request_timeout_s=0.02) as slow:
        poll("replicas observed", lambda: slow.http.get("/readyz").status_code == 200, timeout=60)
        resp = slow.chat(BASE_NAME, "Tell me a long story", max_tokens=200)
        assert resp.status_code == 504, resp.text
        assert resp.json()["error"]["type"] == "timeout"
