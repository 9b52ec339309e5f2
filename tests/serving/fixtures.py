"""Shared serving fixtures: a tiny Llama vLLM can load, random-weight LoRA adapters, two real vLLM replicas, and the
router and scripted replicas on loopback ports.

Registered for the whole suite by `pytest_plugins` in tests/conftest.py, so every test directory shares one
session-scoped `vllm_pair` (the router, adapter manager and ModelServer end-to-end tests). Names:
`tiny_base`, `make_adapter`, `tiny_adapters`, `vllm_pair`, `replicas_up`, `serve_router`, `serve_scripted`.
The adapters and replicas themselves are built by tests/support/serving.py (the benchmarks use it too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from loraplane.serving.vllm_process import VllmProcess
from tests.support.serving import TINY_ADAPTERS, MakeAdapter, tiny_replica, write_adapter

if TYPE_CHECKING:  # imported by the fixtures: a plugin of every session imports no router code
    from tests.serving.router_helpers import Router


@pytest.fixture(scope="session")
def tiny_base(tiny_model: Path) -> Path:
    """The suite's tiny Llama (tests/conftest.py `tiny_model`): 2 layers, head_dim 32, a ChatML tokenizer."""
    return tiny_model


@pytest.fixture(scope="session")
def make_adapter(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> MakeAdapter:
    """`make_adapter(name, seed, dest=None) -> Path`: a fresh adapter directory (PEFT files + result.json)."""
    root = tmp_path_factory.mktemp("adapters")

    def make(name: str, seed: int, dest: Path | None = None) -> Path:
        return write_adapter(tiny_base, dest or root / f"{name}-{seed}", name=name, seed=seed)

    return make


@pytest.fixture(scope="session")
def tiny_adapters(make_adapter: MakeAdapter) -> dict[str, Path]:
    """Three adapters, each with its own seed: {"alpha": path, "beta": path, "gamma": path}."""
    return {name: make_adapter(name, seed) for name, seed in TINY_ADAPTERS.items()}


@pytest.fixture(scope="session")
def vllm_pair(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[VllmProcess]]:
    """Two real vLLM processes of `tiny_base`, started concurrently; each has .url, .start(), .stop(), .kill(),
    .restart(). A test that stops or kills one must start it again (`.start()` is a no-op when it runs).
    Each listens on its own loopback address (127.0.0.1, 127.0.0.2), as pods have their own IPs: the sidecars
    next to them (adapter agents) can share one port, as the route's `agent_port` says."""
    logs = tmp_path_factory.mktemp("vllm")
    pair = [tiny_replica(tiny_base, logs / f"replica-{i}.log", host=f"127.0.0.{i + 1}") for i in range(2)]
    try:
        for replica in pair:
            replica.spawn()
        with ThreadPoolExecutor(len(pair)) as pool:
            list(pool.map(lambda r: r.wait_ready(), pair))
        yield pair
    finally:
        for replica in pair:
            replica.stop()
        print(f"\nvLLM logs: {logs}")


@pytest.fixture
def replicas_up(vllm_pair: list[VllmProcess]) -> list[VllmProcess]:
    """`vllm_pair` with both replicas running (restarts one a previous test left stopped or killed)."""
    for replica in vllm_pair:
        if not replica.running():
            replica.start()
    return vllm_pair


ServeRouter = Callable[..., AbstractContextManager["Router"]]
ServeScripted = Callable[..., AbstractContextManager[list[str]]]


@pytest.fixture
def serve_router() -> ServeRouter:
    """`with serve_router(routes=None, **settings) as router:` the router app served by uvicorn on a free loopback
    port for the block (tests/serving/router_helpers.py). Tests that take it are marked `network`."""
    from tests.serving.router_helpers import running_router

    return running_router


@pytest.fixture
def serve_scripted() -> ServeScripted:
    """`with serve_scripted(*replicas) as urls:` each ScriptedReplica on its own free loopback port for the block
    (tests/serving/scripted.py). Tests that take it are marked `network`."""
    from tests.serving.scripted import serving

    return serving
