"""A replica whose answers a test scripts: vLLM's HTTP surface on a real port, for what vLLM will not do on cue
(hold a stream open, fail with a 5xx, break a stream, forget an adapter). The router tests against real vLLM
are in test_router.py."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from loraplane.api.artifact import describe_adapter
from loraplane.api.result import TrainingResult
from loraplane.serving.vllm_client import ALREADY_LOADED, NOT_FOUND
from tests.support.kube import free_port

Chat = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]


class ScriptedReplica:
    """Health, /v1/models, runtime LoRA load/unload and chat completions; `chat` is the test's to replace.

    `log` records, in order, "load <name>", "unload <name>" and "chat <model>" for each request; `bodies`
    the chat request bodies.
    """

    def __init__(self, name: str, base: str = "tiny") -> None:
        self.name, self.base = name, base
        self.loaded: dict[str, str] = {}  # adapter name -> path
        self.log: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.chat: Chat = self.answer
        self.load_failures = 0  # the next this many loads answer 503 (a replica still starting)
        self.load_seconds = 0.0  # how long a load takes
        self.load_times: list[float] = []  # when each load request arrived (time.monotonic)
        self.loads_at_once = 0  # the most load requests handled at the same time
        self._loading = 0

    def app(self) -> web.Application:
        async def health(_: web.Request) -> web.Response:
            return web.Response()

        async def models(_: web.Request) -> web.Response:
            cards = [{"id": self.base, "object": "model", "root": self.base, "parent": None}]
            cards += [{"id": n, "object": "model", "root": p, "parent": self.base} for n, p in self.loaded.items()]
            return web.json_response({"object": "list", "data": cards})

        async def load(request: web.Request) -> web.Response:
            body = await request.json()
            self.load_times.append(time.monotonic())
            if self.load_failures > 0:
                self.load_failures -= 1
                return web.json_response({"message": "engine not ready"}, status=503)
            self._loading += 1
            self.loads_at_once = max(self.loads_at_once, self._loading)
            try:
                await asyncio.sleep(self.load_seconds)
            finally:
                self._loading -= 1
            if body["lora_name"] in self.loaded:
                return web.json_response({"message": f"{body['lora_name']} {ALREADY_LOADED}"}, status=400)
            self.loaded[body["lora_name"]] = body["lora_path"]
            self.log.append(f"load {body['lora_name']}")
            return web.Response(text="Success")

        async def unload(request: web.Request) -> web.Response:
            body = await request.json()
            if self.loaded.pop(body["lora_name"], None) is None:
                return web.json_response({"message": f"{body['lora_name']} {NOT_FOUND}"}, status=404)
            self.log.append(f"unload {body['lora_name']}")
            return web.Response(text="Success")

        async def chat(request: web.Request) -> web.StreamResponse:
            body = await request.json()
            self.bodies.append(body)
            self.log.append(f"chat {body['model']}")
            return await self.chat(request, body)

        app = web.Application()
        app.add_routes(
            [
                web.get("/health", health),
                web.get("/v1/models", models),
                web.post("/v1/load_lora_adapter", load),
                web.post("/v1/unload_lora_adapter", unload),
                web.post("/v1/chat/completions", chat),
            ]
        )
        return app

    async def answer(self, _: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        """A plain (non-streamed) chat completion naming this replica, with usage."""
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"from {self.name}"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        )


async def wait_for(event: threading.Event, timeout: float) -> bool:
    """Await a threading.Event set by the test thread (without blocking the replica's loop)."""
    return await asyncio.get_running_loop().run_in_executor(None, event.wait, timeout)


@contextmanager
def serving(*replicas: ScriptedReplica) -> Iterator[list[str]]:
    """Each replica on its own free loopback port, all from one thread and event loop; yields their URLs."""
    loop = asyncio.new_event_loop()
    runners = [web.AppRunner(replica.app()) for replica in replicas]
    urls = []
    for runner in runners:
        port = free_port()
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        urls.append(f"http://127.0.0.1:{port}")
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield urls
    finally:
        for runner in runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def fake_adapter(directory: Path, name: str) -> tuple[Path, str]:
    """An adapter directory the router's checks accept (files listed with their sha256 in result.json);
    the scripted replica never reads the weights. Returns the path and the adapter's digest."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (directory / "adapter_model.safetensors").write_bytes(os.urandom(256))
    adapter = describe_adapter(directory)
    TrainingResult(ok=True, code=0, reason="Succeeded", name=name, adapter=adapter).write(directory)
    return directory, adapter.sha256
