"""The router against scripted replicas (tests/serving/scripted.py: real HTTP servers whose answers each test
decides), for what real vLLM will not do on cue: hold a stream open, fail with a 5xx, break a stream, forget
an adapter. Streaming, retries, draining, token counting and the access log, each asserted on both sides."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from loraplane.serving.router import AdapterVersion, PublicModel, ServerRoute
from tests.serving.fixtures import ServeRouter, ServeScripted
from tests.serving.router_helpers import Router
from tests.serving.scripted import Chat, ScriptedReplica, fake_adapter, wait_for
from tests.support.kube import poll

HOLD_S = 20.0  # the longest a scripted replica holds a stream open waiting for the test
CHAT = "/v1/chat/completions"


def chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


def base_route(*urls: str, adapters: list[PublicModel] | None = None) -> dict[str, ServerRoute]:
    return {"tiny": ServerRoute(base_model="tiny", replicas=list(urls), adapters=adapters or [])}


def ready(router: Router) -> None:
    poll("replicas observed healthy", lambda: router.http.get("/readyz").status_code == 200, timeout=30)


Routed = Callable[[ScriptedReplica], AbstractContextManager[tuple[Router, str]]]


@pytest.fixture
def routed(serve_scripted: ServeScripted, serve_router: ServeRouter) -> Routed:
    """`with routed(replica) as (router, url):` the replica served and a ready router in front of it for its base
    model."""

    @contextmanager
    def start(replica: ScriptedReplica) -> Iterator[tuple[Router, str]]:
        with serve_scripted(replica) as (url,), serve_router(base_route(url)) as router:
            ready(router)
            yield router, url

    return start


def events_of(resp: httpx.Response) -> list[str]:
    return [line for line in resp.iter_lines() if line]


async def sse(request: web.Request, *events: bytes) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for event in events:
        await resp.write(event)
    return resp


def test_a_stream_is_relayed_event_by_event(routed: Routed) -> None:
    """The replica sends its second event only once the client has the first: a buffering router would stall."""
    replica, client_has_first = ScriptedReplica("a"), threading.Event()

    async def chat(request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        resp = await sse(request, b'data: {"n":1}\n\n')
        seen = await wait_for(client_has_first, HOLD_S)
        await resp.write(b'data: {"n":2}\n\n' if seen else b'data: {"n":"the client never got the first event"}\n\n')
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    replica.chat = chat
    with routed(replica) as (router, _), router.http.stream("POST", CHAT, json=chat_body("tiny", stream=True)) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-request-id"]
        events = (line for line in resp.iter_lines() if line)
        assert next(events) == 'data: {"n":1}'
        client_has_first.set()
        assert list(events) == ['data: {"n":2}', "data: [DONE]"]


def test_a_5xx_or_a_forgotten_adapter_moves_to_the_other_replica(
    tmp_path: Path, serve_router: ServeRouter, serve_scripted: ServeScripted
) -> None:
    """Before the first byte, a failed answer is retried on the other replica; a 404 for an adapter the
    replica listed (it restarted) also makes the router load it there again."""
    broken, good = ScriptedReplica("broken"), ScriptedReplica("good")
    path, digest = fake_adapter(tmp_path / "alpha", "alpha")
    forgotten = threading.Event()

    async def failing(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if body["model"] == "alpha":  # lost its adapters, as after a restart
            broken.loaded.clear()
            forgotten.set()
            message = "The model `alpha` does not exist."
            return web.json_response({"error": {"message": message, "code": 404}}, status=404)
        return web.json_response({"error": {"message": "engine dead"}}, status=503)

    broken.chat = failing
    alpha = PublicModel(name="alpha", versions=[AdapterVersion(name="alpha", path=str(path), sha256=digest)])
    with serve_scripted(broken, good) as urls, serve_router(base_route(*urls, adapters=[alpha])) as router:
        poll("alpha loaded on both", lambda: all("load alpha" in r.log for r in (broken, good)), timeout=30)
        ready(router)
        answers = [router.http.post(CHAT, json=chat_body("tiny")) for _ in range(6)]
        assert [a.status_code for a in answers] == [200] * 6
        assert {a.json()["choices"][0]["message"]["content"] for a in answers} == {"from good"}
        assert "chat tiny" in broken.log, "the broken replica was tried"
        assert router.metric("loraplane_router_upstream_errors_total", model="tiny", kind="5xx") >= 1
        assert router.metric("loraplane_router_retries_total", model="tiny") >= 1

        poll("alpha routable", lambda: router.http.post(CHAT, json=chat_body("alpha")).status_code == 200, timeout=30)
        for _ in range(20):  # until the rotation sends one to the replica that forgot it
            resp = router.http.post(CHAT, json=chat_body("alpha"))
            assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == "from good"
            if forgotten.is_set():
                break
        assert forgotten.is_set(), "equal replicas take turns: one request reached the replica that forgot alpha"
        poll("alpha loaded again where it was forgotten", lambda: broken.log.count("load alpha") == 2, timeout=30)


def test_when_every_replica_fails_the_last_error_answer_is_passed_through(
    serve_router: ServeRouter, serve_scripted: ServeScripted
) -> None:
    a, b = ScriptedReplica("a"), ScriptedReplica("b")
    tried: list[str] = []

    def failing(replica: ScriptedReplica) -> Chat:
        async def chat(request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
            tried.append(replica.name)
            return web.json_response({"error": {"message": f"engine dead on {replica.name}"}}, status=503)

        return chat

    a.chat, b.chat = failing(a), failing(b)
    with serve_scripted(a, b) as urls, serve_router(base_route(*urls)) as router:
        poll("both replicas observed", lambda: all(router.state.healthy.get(u) for u in urls), timeout=30)
        resp = router.http.post(CHAT, json=chat_body("tiny"), headers={"x-request-id": "rid-1"})
        assert sorted(tried) == ["a", "b"], "each replica tried once"
        assert resp.status_code == 503 and resp.headers["x-request-id"] == "rid-1"
        assert resp.json() == {"error": {"message": f"engine dead on {tried[-1]}"}}, "the last answer, as it came"
        assert router.metric("loraplane_router_upstream_errors_total", model="tiny", kind="5xx") == 2
        assert router.metric("loraplane_router_retries_total", model="tiny") == 1
        assert router.metric("loraplane_router_requests_total", model="tiny", status="503") == 1
        assert sum(router.state.outstanding.values()) == 0 and sum(router.state.inflight.values()) == 0


def test_a_replica_gone_mid_answer_is_left_for_another_before_the_first_byte(
    serve_router: ServeRouter, serve_scripted: ServeScripted
) -> None:
    """The answer's head came, its body broke off: nothing reached the client yet, so another replica answers."""
    gone, good = ScriptedReplica("gone"), ScriptedReplica("good")

    async def break_off(request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "application/json", "content-length": "100"})
        await resp.prepare(request)
        await resp.write(b'{"choices": [')
        assert request.transport is not None
        request.transport.abort()
        return resp

    gone.chat = break_off
    with serve_scripted(gone, good) as urls, serve_router(base_route(*urls)) as router:
        poll("both replicas observed", lambda: all(router.state.healthy.get(u) for u in urls), timeout=30)
        for _ in range(20):  # until the rotation sends one to the replica that breaks off
            resp = router.http.post(CHAT, json=chat_body("tiny"))
            assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == "from good"
            if gone.bodies:
                break
        assert len(gone.bodies) == 1, "equal replicas take turns: one request reached the replica that breaks off"
        assert router.metric("loraplane_router_upstream_errors_total", model="tiny", kind="disconnect") == 1
        assert router.metric("loraplane_router_upstream_errors_total", model="tiny", kind="connect") == 0
        assert sum(router.state.outstanding.values()) == 0 and sum(router.state.inflight.values()) == 0


def test_a_stream_broken_after_its_first_event_is_not_retried(
    serve_router: ServeRouter, serve_scripted: ServeScripted
) -> None:
    breaking, other = ScriptedReplica("breaking"), ScriptedReplica("other")

    async def break_off(request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        resp = await sse(request, b'data: {"n":1}\n\n')
        assert request.transport is not None
        request.transport.abort()  # mid-stream: no terminating chunk
        return resp

    breaking.chat = other.chat = break_off
    with serve_scripted(breaking, other) as urls, serve_router(base_route(urls[0])) as router:
        ready(router)
        router.put("tiny", base_route(*urls)["tiny"])  # both replicas now; the first request goes to either
        poll("both replicas observed", lambda: all(router.state.healthy.get(u) for u in urls), timeout=30)
        with router.http.stream("POST", CHAT, json=chat_body("tiny", stream=True)) as resp:
            assert resp.status_code == 200
            assert events_of(resp) == ['data: {"n":1}'], "the client gets what was sent, then the end"
        assert len(breaking.bodies) + len(other.bodies) == 1, "not sent to a second replica"
        assert router.metric("loraplane_router_upstream_errors_total", model="tiny", kind="stream") == 1
        assert router.metric("loraplane_router_requests_total", model="tiny", status="stream_error") == 1


def test_a_client_that_leaves_mid_stream_frees_its_place_and_the_replica_stops(routed: Routed) -> None:
    replica, replica_saw_close = ScriptedReplica("a"), threading.Event()

    async def endless(request: web.Request, _: dict[str, Any]) -> web.StreamResponse:
        resp = await sse(request, b'data: {"n":0}\n\n')
        try:
            for n in range(1, 10_000):
                await resp.write(b'data: {"n":%d}\n\n' % n)
                if await wait_for(replica_saw_close, 0.01):
                    break
        except (ConnectionError, RuntimeError):  # the router closed the stream: vLLM would abort the request
            replica_saw_close.set()
        return resp

    replica.chat = endless
    with routed(replica) as (router, url):
        with router.http.stream("POST", CHAT, json=chat_body("tiny", stream=True)) as resp:
            lines = resp.iter_lines()  # held: a dropped iterator closes the connection at once
            assert next(line for line in lines if line) == 'data: {"n":0}'
            assert router.state.outstanding[url] == 1
        poll("the replica's stream closed by the router", replica_saw_close.is_set, timeout=30)
        poll("nothing left in flight", lambda: router.state.outstanding[url] == 0, timeout=30)
        assert router.state.inflight[(url, "tiny")] == 0


def test_streamed_tokens_are_counted_and_the_usage_event_reaches_only_who_asked(routed: Routed) -> None:
    replica = ScriptedReplica("a")
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'

    async def stream(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if not body.get("stream"):
            return await replica.answer(request, body)
        with_usage = (body.get("stream_options") or {}).get("include_usage") is True
        events = [
            b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n',
            b'data: {"choices":[{"delta":{"content":"b"}}]}\n\n',
        ]
        resp = await sse(request, *events, *([usage] if with_usage else []), b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    replica.chat = stream
    with routed(replica) as (router, _):
        with router.http.stream("POST", CHAT, json=chat_body("tiny", stream=True)) as resp:
            plain = events_of(resp)
        options = {"include_usage": True}
        with router.http.stream("POST", CHAT, json=chat_body("tiny", stream=True, stream_options=options)) as resp:
            asked = events_of(resp)
        assert router.http.post(CHAT, json=chat_body("tiny")).status_code == 200
        tokens = {
            k: router.metric("loraplane_router_tokens_total", model="tiny", kind=k) for k in ("prompt", "completion")
        }

    assert all(body["stream_options"] == {"include_usage": True} for body in replica.bodies if body.get("stream"))
    assert len(plain) == 3 and not any('"usage"' in e for e in plain), "not asked for: cut out"
    assert len(asked) == 4 and asked[2] == usage.decode().strip(), "asked for: passed on"
    assert tokens == {"prompt": 9.0, "completion": 6.0}, "two streams and one plain answer, each 3 + 2"


def test_the_access_log_has_one_json_line_per_request(caplog: pytest.LogCaptureFixture, routed: Routed) -> None:
    caplog.set_level(logging.INFO, logger="loraplane.router.access")
    replica = ScriptedReplica("a")
    with routed(replica) as (router, url):
        assert router.http.post(CHAT, json=chat_body("tiny"), headers={"x-request-id": "rid-7"}).status_code == 200
        assert router.http.post(CHAT, json=chat_body("nope")).status_code == 404
    assert replica.bodies and all(b["model"] == "tiny" for b in replica.bodies)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "loraplane.router.access"]
    ok = next(line for line in lines if line["request_id"] == "rid-7")
    assert ok["model"] == ok["version"] == "tiny" and ok["replica"] == url and ok["status"] == 200
    assert ok["ms"] > 0
    missing = [line for line in lines if line["status"] == 404]
    assert len(missing) == 1 and missing[0]["model"] == "-" and len(missing[0]["request_id"]) == 32


@pytest.mark.parametrize("drain_s", [30.0, 1.0], ids=["until-done", "bounded"])
def test_an_unload_waits_for_the_streams_in_flight(
    tmp_path: Path, drain_s: float, serve_router: ServeRouter, serve_scripted: ServeScripted
) -> None:
    """Taking an adapter off stops new requests at once, and unloads it only when its open stream is done,
    or when the drain timeout runs out."""
    replica, release = ScriptedReplica("a"), threading.Event()
    path, digest = fake_adapter(tmp_path / "alpha", "alpha")

    async def held(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if not body.get("stream"):
            return await replica.answer(request, body)
        resp = await sse(request, b'data: {"n":1}\n\n')
        await wait_for(release, HOLD_S)
        replica.log.append("stream done")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    replica.chat = held
    alpha = PublicModel(name="alpha", versions=[AdapterVersion(name="alpha", path=str(path), sha256=digest)])
    with (
        serve_scripted(replica) as urls,
        serve_router(base_route(*urls, adapters=[alpha]), drain_timeout_s=drain_s) as router,
    ):
        poll("alpha routable", lambda: router.http.post(CHAT, json=chat_body("alpha")).status_code == 200, timeout=30)
        with router.http.stream("POST", CHAT, json=chat_body("alpha", stream=True)) as resp:
            lines = resp.iter_lines()
            assert next(line for line in lines if line) == 'data: {"n":1}'
            router.put("tiny", base_route(*urls)["tiny"])  # alpha taken off
            poll("alpha draining", lambda: (urls[0], "alpha") in router.state.stopped, timeout=30)
            assert router.http.post(CHAT, json=chat_body("alpha")).status_code == 404, "no new requests"
            if drain_s < HOLD_S:
                poll("unloaded at the drain timeout", lambda: "unload alpha" in replica.log, timeout=drain_s + 20)
                assert "stream done" not in replica.log, "the stream was still open"
            else:
                assert "unload alpha" not in replica.log, "not while its stream is open"
            release.set()
            assert [line for line in lines if line] == ["data: [DONE]"], "the open stream ends normally"
        poll("alpha unloaded", lambda: "unload alpha" in replica.log, timeout=30)
        if drain_s >= HOLD_S:
            assert replica.log.index("stream done") < replica.log.index("unload alpha")


def test_a_chunked_body_over_the_limit_and_no_healthy_replica(
    tmp_path: Path, serve_router: ServeRouter, serve_scripted: ServeScripted
) -> None:
    """413 also when the body comes without a Content-Length; /readyz is 503 until a replica is healthy."""
    dead = ScriptedReplica("dead")
    with serve_scripted(dead) as urls:
        pass  # its port is closed again: a replica that is not there
    with serve_router(base_route(*urls), max_body_bytes=4096) as router:
        assert router.http.get("/readyz").status_code == 503
        assert router.http.get("/healthz").status_code == 200

        def body() -> Iterator[bytes]:
            yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
            yield b"x" * 8192
            yield b'"}]}'

        resp = router.http.post(CHAT, content=body(), headers={"content-type": "application/json"})
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large", resp.text
        assert "content-length" not in resp.request.headers


def test_a_user_stays_on_one_version_of_a_canary(
    tmp_path: Path, serve_router: ServeRouter, serve_scripted: ServeScripted
) -> None:
    """The body's `user` field keeps a user on one version, as the session header does; metrics tell versions apart."""
    replica = ScriptedReplica("a")
    versions = []
    for name in ("v1", "v2"):
        path, digest = fake_adapter(tmp_path / name, name)
        versions.append(AdapterVersion(name=name, path=str(path), sha256=digest, weight=50))
    canary = PublicModel(name="medical", versions=versions)
    with serve_scripted(replica) as urls, serve_router(base_route(*urls, adapters=[canary])) as router:
        poll("both versions loaded", lambda: {"load v1", "load v2"} <= set(replica.log), timeout=30)
        poll(
            "medical routable", lambda: router.http.post(CHAT, json=chat_body("medical")).status_code == 200, timeout=30
        )

        def counted() -> dict[str, tuple[float, float]]:  # per version: 200s, latency observations
            return {
                v: (
                    router.metric("loraplane_router_requests_total", model="medical", version=v, status="200"),
                    router.metric("loraplane_router_request_seconds_count", model="medical", version=v),
                )
                for v in ("v1", "v2")
            }

        before = counted()
        answered: Counter[str] = Counter()
        for user in ("u-1", "u-2", "u-3", "u-4"):
            seen = [router.http.post(CHAT, json=chat_body("medical", user=user)).json()["model"] for _ in range(8)]
            assert len(set(seen)) == 1, f"user {user} moved between versions: {seen}"
            answered.update(seen)
        anonymous = [router.http.post(CHAT, json=chat_body("medical")).json()["model"] for _ in range(8)]
        assert set(anonymous) == {"v1", "v2"}, "without a user the split is by weight"
        answered.update(anonymous)
        after = counted()
        for v in ("v1", "v2"):
            grew = tuple(a - b for a, b in zip(after[v], before[v], strict=True))
            assert grew == (answered[v], answered[v]), f"{v}: metrics {grew}, answers {answered[v]}"
