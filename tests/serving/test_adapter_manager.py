"""The adapter manager and the vLLM client against two real vLLM replicas of the tiny base model."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from loraplane.serving.adapter_manager import AdapterManager, DesiredAdapter, NoRouting, ReplicaReport
from loraplane.serving.vllm_client import AdapterRejected, ReplicaUnavailable, VllmClient
from loraplane.serving.vllm_process import VllmProcess
from tests.support.kube import free_port

T = TypeVar("T")


def run(coro_fn: Callable[[VllmClient], Awaitable[T]]) -> T:
    """Run `coro_fn(client)` on a fresh event loop with one shared aiohttp session."""

    async def main() -> T:
        async with aiohttp.ClientSession() as session:
            return await coro_fn(VllmClient(session, timeout=120))

    return asyncio.run(main())


class RecordingHooks(NoRouting):
    """A real RoutingHooks implementation that records the calls (and can pretend an adapter stays busy)."""

    def __init__(self, busy: bool = False) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.busy = busy

    def observed(self, replica: str, loaded: frozenset[str], healthy: bool) -> None:
        self.calls.append(("observed", replica, loaded, healthy))

    def stop_routing(self, replica: str, adapter: str) -> None:
        self.calls.append(("stop_routing", replica, adapter))

    async def wait_idle(self, replica: str, adapter: str, timeout: float) -> bool:
        self.calls.append(("wait_idle", replica, adapter, timeout))
        return not self.busy


def desired(adapters: Mapping[str, Path]) -> dict[str, DesiredAdapter]:
    return {name: DesiredAdapter(name, str(path)) for name, path in adapters.items()}


def reconcile(replica: str, want: Mapping[str, DesiredAdapter], hooks: RecordingHooks | None = None) -> ReplicaReport:
    return run(lambda c: AdapterManager(c, hooks or RecordingHooks(), backoff=0.05).reconcile(replica, want))


def chat(client_url: str, model: str) -> str:
    async def go(_: VllmClient) -> str:
        async with aiohttp.ClientSession() as s:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": "What is the code for item 3?"}],
                "max_tokens": 8,
                "temperature": 0,
            }
            async with s.post(client_url + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 200, await resp.text()
                return str((await resp.json())["choices"][0]["message"]["content"])

    return run(go)


@pytest.fixture
def clean(replicas_up: list[VllmProcess]) -> Iterator[list[VllmProcess]]:
    """Both replicas running with no adapters loaded, before and after the test."""
    for replica in replicas_up:
        assert reconcile(replica.url, {}).loaded == frozenset()
    yield replicas_up
    for replica in replicas_up:
        if replica.running():
            reconcile(replica.url, {})


def test_load_three_then_idempotent_then_unload_drains(
    clean: list[VllmProcess], tiny_adapters: dict[str, Path]
) -> None:
    url = clean[0].url
    hooks = RecordingHooks()
    report = reconcile(url, desired(tiny_adapters), hooks)
    assert report.healthy and report.loaded == frozenset(tiny_adapters) and not report.errors
    assert run(lambda c: c.list_models(url)) == frozenset(tiny_adapters)
    assert hooks.calls == [("observed", url, frozenset(tiny_adapters), True)]
    answers = {name: chat(url, name) for name in ["base", *tiny_adapters]}
    assert all(answers[name] != answers["base"] for name in tiny_adapters), answers

    again = RecordingHooks()
    assert reconcile(url, desired(tiny_adapters), again) == report
    assert [c[0] for c in again.calls] == ["observed"]  # nothing loaded or drained

    keep = {k: v for k, v in tiny_adapters.items() if k != "beta"}
    drain = RecordingHooks(busy=True)  # still busy after the bounded wait: unloaded anyway
    report = reconcile(url, desired(keep), drain)
    assert report.loaded == frozenset(keep) and not report.errors
    assert drain.calls[:2] == [("stop_routing", url, "beta"), ("wait_idle", url, "beta", 30.0)]
    assert drain.calls[-1] == ("observed", url, frozenset(keep), True)
    assert run(lambda c: c.list_models(url)) == frozenset(keep)


def test_replicas_reconciled_concurrently_and_restarted_replica_gets_adapters_back(
    clean: list[VllmProcess], tiny_adapters: dict[str, Path]
) -> None:
    a, b = clean
    want = desired(tiny_adapters)

    async def both(c: VllmClient) -> list[ReplicaReport]:
        manager = AdapterManager(c, NoRouting())
        return list(
            await asyncio.gather(manager.reconcile(a.url, want), manager.reconcile(b.url, {"alpha": want["alpha"]}))
        )

    reports = run(both)
    assert [(r.replica, r.loaded) for r in reports] == [(a.url, frozenset(want)), (b.url, frozenset({"alpha"}))]

    b.restart()
    assert run(lambda c: c.list_models(b.url)) == frozenset()  # a restarted vLLM forgets runtime adapters
    report = reconcile(b.url, {"alpha": want["alpha"]})
    assert report.healthy and report.loaded == frozenset({"alpha"}) and not report.errors


def test_client_maps_vllm_answers(clean: list[VllmProcess], tiny_adapters: dict[str, Path], tmp_path: Path) -> None:
    url = clean[0].url

    async def go(c: VllmClient) -> None:
        assert await c.load_adapter(url, "alpha", str(tiny_adapters["alpha"])) is True
        assert await c.load_adapter(url, "alpha", str(tiny_adapters["alpha"])) is False  # already loaded
        with pytest.raises(AdapterRejected, match="No adapter found") as bad_path:
            await c.load_adapter(url, "ghost", str(tmp_path / "missing"))
        assert bad_path.value.status == 404
        with pytest.raises(AdapterRejected, match="conflicts with a served base model"):
            await c.load_adapter(url, "base", str(tiny_adapters["beta"]))
        assert (await c.served_models(url)).adapters == {"alpha": str(tiny_adapters["alpha"])}
        assert await c.unload_adapter(url, "alpha") is True
        assert await c.unload_adapter(url, "alpha") is False  # not loaded: nothing to do

    run(go)


def test_unreachable_replica_is_reported_unhealthy() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused
    hooks = RecordingHooks()
    report = reconcile(url, {"alpha": DesiredAdapter("alpha", "/nowhere")}, hooks)
    assert not report.healthy and report.loaded == frozenset()
    assert "alpha" in report.errors and "Connect" in report.errors["alpha"]
    assert hooks.calls == [("observed", url, frozenset(), False)]

    async def go(c: VllmClient) -> None:
        with pytest.raises(ReplicaUnavailable):
            await c.list_models(url)

    run(go)
