"""The adapter agent: a sidecar of each vLLM pod that holds that replica's adapters.

It speaks vLLM's own admin API, so the router's adapter manager drives it exactly as it drives vLLM
(`/v1/models`, `/v1/load_lora_adapter`, `/v1/unload_lora_adapter`), and adds what vLLM cannot do itself:

- an `oci://…@sha256:…` path is pulled from the registry into the replica's bounded cache and verified
  (manifest digest, every layer digest, result.json) before vLLM sees it; vLLM then loads the local copy;
- before vLLM is asked, the adapter must fit the replica (`fit.py`): same base model, rank within
  `--max-lora-rank`, PEFT settings vLLM can serve for the architecture — refused with 400 naming what differs;
- `/residency` and `/metrics` report which adapters are loaded since when, and what the cache holds.

Any other path (a directory on a claim the pod mounts) goes to vLLM unchanged. vLLM is on localhost; the
agent is the only thing besides vLLM that listens in the pod.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from loraplane.api.oci import OciRef
from loraplane.serving.agent.cache import AdapterCache, CacheFull
from loraplane.serving.agent.fit import before_pull, peft_config, unfit
from loraplane.serving.agent.settings import AgentSettings
from loraplane.serving.oci_store import ArtifactRefused, RegistryAccess, StoreError, pull
from loraplane.serving.router.errors import RouterError
from loraplane.serving.vllm_client import ALREADY_LOADED

logger = logging.getLogger("loraplane.agent")


@dataclass
class Loaded:
    name: str
    source: str  # what the router asked for (oci://… or a path)
    path: str  # what vLLM loaded
    digest: str | None
    since: float = field(default_factory=time.time)


def openai_error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    """An error in OpenAI's shape, made where the router makes its own (`router.errors`)."""
    return RouterError(status, message, type=kind).response()


class Metrics:
    """The agent's Prometheus metrics (its own registry: one app per process, and tests make several)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.pulls = Counter(
            "loraplane_agent_pulls", "Artifact pulls by result (ok, refused, failed)", ["result"], registry=r
        )
        self.pull_seconds = Histogram(
            "loraplane_agent_pull_seconds", "Pull and verify time", registry=r, buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 120)
        )
        self.hits = Counter("loraplane_agent_cache_hits", "Loads served from the cache without a pull", registry=r)
        self.loaded = Gauge("loraplane_agent_adapters_loaded", "Adapters loaded on this replica", registry=r)
        self.cache_bytes = Gauge("loraplane_agent_cache_bytes", "Bytes in the adapter cache", registry=r)
        self.evictions = Gauge("loraplane_agent_cache_evictions", "Cache entries evicted so far", registry=r)


class AdapterAgent:
    """One replica's adapters: what vLLM holds (as this agent loaded it) and the cache behind it."""

    def __init__(self, settings: AgentSettings) -> None:
        access = RegistryAccess.from_env(plain_http=settings.plain_http)
        self.settings = settings
        limit = settings.cache_limit_bytes

        def admit(manifest: dict[str, Any]) -> str | None:
            return before_pull(manifest, base_model=settings.base_model, cache_limit=limit)

        self.cache = AdapterCache(settings.cache_dir, limit, lambda ref, d: pull(ref, d, access, admit=admit))
        self.loaded: dict[str, Loaded] = {}
        self.metrics = Metrics()
        self.vllm = settings.vllm_url.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def forward(self, method: str, path: str, body: dict[str, Any] | None = None) -> Response:
        assert self.session is not None, "used outside the app's lifespan"
        try:
            async with self.session.request(method, self.vllm + path, json=body) as resp:
                return Response(await resp.read(), status_code=resp.status, media_type=resp.content_type)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return openai_error(
                503, f"vLLM on {self.vllm} unavailable: {exc.__class__.__name__}: {exc}", "server_error"
            )

    async def models(self) -> Response:
        response = await self.forward("GET", "/v1/models")
        if response.status_code == 200:  # what vLLM holds is the truth: a restarted vLLM holds nothing
            cards = json.loads(bytes(response.body))["data"]
            names = {str(c["id"]) for c in cards if c.get("parent")}
            for name in set(self.loaded) - names:
                self.loaded.pop(name)
            self.cache.forget_users(names)
            self.metrics.loaded.set(len(self.loaded))
        return response

    async def fetch(self, name: str, source: str) -> tuple[str, str] | JSONResponse:
        """The cache entry of an oci:// source, pulled and verified if new, and fit for this replica:
        (digest, local path), or the error answer."""
        m = self.metrics
        try:
            ref = OciRef.parse(source)
            started = time.monotonic()
            entry, pulled = await asyncio.to_thread(self.cache.get, ref)
        except (ValueError, ArtifactRefused, CacheFull) as exc:
            m.pulls.labels("refused").inc()
            return openai_error(
                507 if isinstance(exc, CacheFull) else 400, f"adapter {name} from {source} refused: {exc}"
            )
        except StoreError as exc:
            m.pulls.labels("failed").inc()
            return openai_error(502, f"adapter {name}: pulling {source} failed: {exc}", "server_error")
        if pulled:
            m.pulls.labels("ok").inc()
            m.pull_seconds.observe(time.monotonic() - started)
        else:
            m.hits.inc()
        problem = unfit(
            entry.result,
            peft_config(entry.path),
            base_model=self.settings.base_model,
            max_lora_rank=self.settings.max_lora_rank,
        )
        if problem:
            return openai_error(400, f"adapter {name} from {source} cannot be served here: {problem}")
        return entry.digest, str(entry.path)

    async def load(self, name: str, source: str) -> Response:
        if not name or not source:
            return openai_error(400, "lora_name and lora_path are required")
        digest, path = None, source
        if source.startswith("oci://"):
            fetched = await self.fetch(name, source)
            if isinstance(fetched, JSONResponse):
                return fetched
            digest, path = fetched
            self.cache.use(digest, name)
        response = await self.forward("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        # a version name is one artifact, so vLLM's "already loaded" (e.g. after an agent restart) is resident too
        text = bytes(response.body).decode(errors="replace")
        if response.status_code == 200 or (response.status_code == 400 and ALREADY_LOADED in text):
            self.loaded[name] = Loaded(name, source, path, digest)
        elif digest and name not in self.loaded:
            self.cache.release(name)
        self.metrics.loaded.set(len(self.loaded))
        self.metrics.cache_bytes.set(self.cache.used_bytes)
        self.metrics.evictions.set(self.cache.evictions)
        return response

    async def unload(self, name: str) -> Response:
        response = await self.forward("POST", "/v1/unload_lora_adapter", {"lora_name": name})
        if response.status_code in (200, 404):
            self.loaded.pop(name, None)
            self.cache.release(name)
        self.metrics.loaded.set(len(self.loaded))
        return response

    def residency(self) -> dict[str, Any]:
        cache = self.cache
        return {
            "adapters": [
                {"name": x.name, "source": x.source, "path": x.path, "digest": x.digest, "loadedAt": x.since}
                for x in sorted(self.loaded.values(), key=lambda x: x.name)
            ],
            "cache": {
                "limitBytes": cache.limit,
                "usedBytes": cache.used_bytes,
                "evictions": cache.evictions,
                "entries": [{"digest": e.digest, "bytes": e.size, "usedBy": sorted(e.users)} for e in cache.entries()],
            },
        }


def create_app(settings: AgentSettings) -> FastAPI:
    agent = AdapterAgent(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.vllm_timeout_s)) as session:
            agent.session = session
            yield

    app = FastAPI(title="Loraplane adapter agent", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.agent = agent

    @app.get("/v1/models")
    async def models() -> Response:
        return await agent.models()

    @app.post("/v1/load_lora_adapter")
    async def load(request: Request) -> Response:
        body = await request.json()
        return await agent.load(str(body.get("lora_name") or ""), str(body.get("lora_path") or ""))

    @app.post("/v1/unload_lora_adapter")
    async def unload(request: Request) -> Response:
        return await agent.unload(str((await request.json()).get("lora_name") or ""))

    @app.get("/residency")
    async def residency() -> dict[str, Any]:
        return agent.residency()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        agent.metrics.cache_bytes.set(agent.cache.used_bytes)
        return Response(generate_latest(agent.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
