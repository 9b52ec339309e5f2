"""The adapter agent: a sidecar of each vLLM pod that owns that replica's adapters.

The router (or anything else) puts the replica's desired versions (`PUT /v1/desired`, `agent.protocol`); the
agent keeps its vLLM holding exactly those, with the same level-triggered :class:`AdapterManager` the router
uses for replicas without an agent: every change, and every `reconcile_interval_s`, it lists what vLLM holds,
loads what is missing and unloads what is extra. What the agent adds:

- an `oci://…@sha256:…` source is pulled into the replica's bounded cache and verified (manifest digest,
  every layer digest, result.json) before vLLM sees it; vLLM loads the local copy. An `s3://…@sha256:…`
  source likewise (result.json first, pinned by the adapter sha256, every object against it; the endpoint
  and login from the AWS variables the operator sets in this container alone); A directory source (a
  claim the pod mounts into both containers, or local mode's store) is checked against its result.json
  the same way;
- before vLLM is asked, the adapter must fit the replica (`fit.py`): same base model, rank within
  `--max-lora-rank`, PEFT settings vLLM can serve for the architecture;
- before an unload it drains on vLLM's own view (`drain.py`): it waits until vLLM neither runs nor queues a
  request for that adapter, whoever sent it;
- a restarted vLLM lists nothing: the next round loads everything again, from the cache; a restarted agent
  adopts what vLLM still holds and leaves it alone until a desired set is put again;
- `/residency` and `/metrics` report what is loaded since when, the last round's errors and the cache.

vLLM is on localhost; the agent is the only thing besides vLLM that listens in the pod. Inference never
passes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from loraplane.api.oci import OciRef
from loraplane.api.result import TrainingResult
from loraplane.api.s3 import S3Ref
from loraplane.serving import s3_store
from loraplane.serving.adapter_manager import (
    AdapterManager,
    AdapterRefused,
    DesiredAdapter,
    ReplicaReport,
    in_background,
)
from loraplane.serving.agent.cache import AdapterCache, CacheFull
from loraplane.serving.agent.drain import VllmDrain
from loraplane.serving.agent.fit import before_fetch, before_pull, peft_config, unfit
from loraplane.serving.agent.protocol import CacheEntry, CacheReport, DesiredSet, Residency, Resident
from loraplane.serving.agent.settings import AgentSettings
from loraplane.serving.oci_store import ArtifactRefused, RegistryAccess, StoreError, pull, verified_result
from loraplane.serving.router.errors import add_handlers, parse_body
from loraplane.serving.vllm_client import VllmClient, VllmError

logger = logging.getLogger("loraplane.agent")


def checked_directory(source: str) -> TrainingResult:
    """The result.json of the adapter directory `source`; `AdapterRefused` unless every file in it matches."""
    directory = Path(source)
    if not directory.is_dir():
        raise AdapterRefused(f"adapter directory {source} does not exist")
    try:
        return verified_result(directory)
    except ArtifactRefused as exc:
        raise AdapterRefused(f"adapter {exc}") from exc


@dataclass
class Loaded:
    name: str
    source: str  # as desired (oci://… or a path)
    path: str  # what vLLM loaded
    digest: str | None
    since: float = field(default_factory=time.time)


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
        self.failing = Gauge("loraplane_agent_adapters_failing", "Desired adapters that failed to load", registry=r)
        self.cache_bytes = Gauge("loraplane_agent_cache_bytes", "Bytes in the adapter cache", registry=r)
        self.evictions = Gauge("loraplane_agent_cache_evictions", "Cache entries evicted so far", registry=r)
        self.rounds = Counter("loraplane_agent_reconcile_rounds", "Reconcile rounds run", registry=r)


class AdapterAgent:
    """One replica's adapters: the desired set, what vLLM holds (as this agent loaded it) and the cache behind it.

    It is the adapter manager's `ReplicaApi` for its own vLLM (`list_models`, `load_adapter`,
    `unload_adapter`): pull, verify and fit first, then vLLM's admin API.
    """

    def __init__(self, settings: AgentSettings) -> None:
        self.access = RegistryAccess.from_env(plain_http=settings.plain_http)
        self.settings = settings
        self.cache = AdapterCache(settings.cache_dir, settings.cache_limit_bytes)
        self.loaded: dict[str, Loaded] = {}
        self.metrics = Metrics()
        self.vllm_url = settings.vllm_url.rstrip("/")
        self.desired: dict[str, DesiredAdapter] | None = None  # None: nobody put a set since this agent started
        self.report: ReplicaReport | None = None
        self._vllm: VllmClient | None = None
        self._drain: VllmDrain | None = None
        self._asked = 0  # puts so far
        self._done = 0  # the last of them a finished round covered
        self._wake = asyncio.Event()
        self._finished = asyncio.Condition()

    # -- ReplicaApi: what the adapter manager calls (replica = this agent's vLLM) -----------------------------
    @property
    def vllm(self) -> VllmClient:
        assert self._vllm is not None, "used outside the app's lifespan"
        return self._vllm

    async def list_models(self, replica: str) -> frozenset[str]:
        """What vLLM holds; a restarted vLLM holds nothing, and a restarted agent adopts what vLLM kept."""
        served = (await self.vllm.served_models(replica)).adapters
        for name in set(self.loaded) - set(served):
            self.loaded.pop(name)
        self.cache.forget_users(set(served))
        for name, path in served.items():
            if name not in self.loaded:
                digest = self._cached_digest(path)
                if digest:
                    self.cache.use(digest, name)
                wanted = self._wanted(name)
                self.loaded[name] = Loaded(name, wanted.path if wanted else path, path, digest)
        return frozenset(served)

    async def load_adapter(self, replica: str, name: str, source: str) -> bool:
        digest, path = None, source
        if source.startswith(("oci://", "s3://")):
            digest, path = await self.fetch(name, source)
            self.cache.use(digest, name)
        else:  # a claim mounted into both containers, or local mode's store: vLLM reads it where it is
            result = await asyncio.to_thread(checked_directory, source)
            self.check_fit(name, source, result, Path(source))
        try:
            fresh = await self.vllm.load_adapter(replica, name, path)
        except VllmError:
            if digest and name not in self.loaded:
                self.cache.release(name)
            raise
        self.loaded[name] = Loaded(name, source, path, digest)  # "already loaded" too: a version is one artifact
        return fresh

    async def unload_adapter(self, replica: str, name: str) -> bool:
        unloaded = await self.vllm.unload_adapter(replica, name)
        self.loaded.pop(name, None)
        self.cache.release(name)
        return unloaded

    # -- pulling -------------------------------------------------------------------------------------------
    def _wanted(self, name: str) -> DesiredAdapter | None:
        return self.desired.get(name) if self.desired else None

    def _cached_digest(self, path: str) -> str | None:
        here = Path(path)
        if here.parent == self.settings.cache_dir:
            return f"sha256:{here.name}"
        return None

    def puller(self, source: str) -> tuple[str, Callable[[Path], TrainingResult]]:
        """The version digest of a pinned oci:// or s3:// source, and how to pull it into a cache directory:
        verified, and refused before any adapter file is downloaded when it cannot fit (base model, size)."""
        base, limit = self.settings.base_model, self.settings.cache_limit_bytes
        if source.startswith("s3://"):
            s3 = S3Ref.parse(source)
            if not s3.sha256:
                raise ValueError(f"{source}: an adapter is loaded by version (s3://…@sha256:…), not by location")

            def admit_result(result: TrainingResult) -> str | None:
                return before_fetch(result, base_model=base, cache_limit=limit)

            def fetch_s3(dest: Path) -> TrainingResult:
                access = s3_store.S3Access.from_env()  # read per pull: a rotated login is picked up
                return s3_store.pull(s3, dest, access, expect_sha256=s3.sha256, admit=admit_result)

            return f"sha256:{s3.sha256}", fetch_s3
        oci = OciRef.parse(source)
        if not oci.digest:
            raise ValueError(f"{source}: an adapter is loaded by digest (oci://…@sha256:…), not by tag")

        def admit_manifest(manifest: dict[str, object]) -> str | None:
            return before_pull(manifest, base_model=base, cache_limit=limit)

        return oci.digest, lambda dest: pull(oci, dest, self.access, admit=admit_manifest)

    async def fetch(self, name: str, source: str) -> tuple[str, str]:
        """The cache entry of an oci:// or s3:// source, pulled and verified if new, and fit for this replica:
        (digest, local path). `AdapterRefused` says why not."""
        m = self.metrics
        try:
            digest, fetch = self.puller(source)
            started = time.monotonic()
            entry, pulled = await asyncio.to_thread(self.cache.get, digest, fetch)
        except (ValueError, ArtifactRefused, CacheFull) as exc:
            m.pulls.labels("refused").inc()
            raise AdapterRefused(f"{source} refused: {exc}") from exc
        except StoreError as exc:
            m.pulls.labels("failed").inc()
            raise AdapterRefused(f"pulling {source} failed: {exc}") from exc
        if pulled:
            m.pulls.labels("ok").inc()
            m.pull_seconds.observe(time.monotonic() - started)
        else:
            m.hits.inc()
        self.check_fit(name, source, entry.result, entry.path)
        return entry.digest, str(entry.path)

    def check_fit(self, name: str, source: str, result: TrainingResult, path: Path) -> None:
        """`AdapterRefused` unless the verified adapter at `path` fits this replica and is the version desired."""
        problem = unfit(
            result, peft_config(path), base_model=self.settings.base_model, max_lora_rank=self.settings.max_lora_rank
        )
        wanted = self._wanted(name)
        expected = wanted.sha256 if wanted else None
        actual = result.adapter.sha256 if result.adapter else ""
        if not problem and expected is not None and expected != actual:
            problem = f"result.json adapter.sha256 is {actual}, expected {expected}"
        if problem:
            raise AdapterRefused(f"{source} cannot be served here: {problem}")

    # -- the desired set and the reconcile loop --------------------------------------------------------------
    async def put(self, desired: DesiredSet, wait: float) -> Residency:
        """Make `desired` the replica's set and answer after a round that started since (or after `wait`
        seconds): the answer is what vLLM holds now, even when the set did not change (a vLLM restart)."""
        self.desired = {a.name: DesiredAdapter(a.name, a.source, a.sha256) for a in desired.adapters}
        self._asked += 1
        target = self._asked
        self._wake.set()
        async with self._finished:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait_for(lambda: self._done >= target), timeout=wait)
        return self.residency()

    async def run(self, manager: AdapterManager, interval: float) -> None:
        """Reconcile after every put, else every `interval` (a restarted vLLM is refilled without the router)."""
        while True:
            self._wake.clear()
            asked = self._asked
            try:
                if self.desired is None:  # only observe: a restarted agent must not unload what vLLM serves
                    await self.list_models(self.vllm_url)
                    self.report = ReplicaReport(self.vllm_url, True, frozenset(self.loaded), {})
                else:
                    self.report = await manager.reconcile(self.vllm_url, self.desired)
            except VllmError as exc:
                self.report = ReplicaReport(self.vllm_url, False, frozenset(), {})
                logger.warning("vLLM on %s unavailable: %s", self.vllm_url, exc)
            except Exception:  # keep the loop alive; the next round starts from what vLLM reports
                logger.exception("adapter reconcile failed")
            self.metrics.rounds.inc()
            async with self._finished:
                self._done = asked
                self._finished.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)

    # -- reports -------------------------------------------------------------------------------------------
    def refresh_gauges(self) -> None:
        """Set the gauges from the state (when /metrics is read)."""
        self.metrics.loaded.set(len(self.loaded))
        self.metrics.failing.set(len(self.report.errors) if self.report else 0)
        self.metrics.cache_bytes.set(self.cache.used_bytes)
        self.metrics.evictions.set(self.cache.evictions)

    def residency(self) -> Residency:
        cache, report = self.cache, self.report
        return Residency(
            healthy=report.healthy if report else False,
            desired=sorted(self.desired) if self.desired is not None else None,
            adapters=[
                Resident(name=x.name, source=x.source, path=x.path, digest=x.digest, loaded_at=x.since)
                for x in sorted(self.loaded.values(), key=lambda x: x.name)
            ],
            errors=dict(report.errors) if report else {},
            cache=CacheReport(
                limit_bytes=cache.limit,
                used_bytes=cache.used_bytes,
                evictions=cache.evictions,
                entries=[CacheEntry(digest=e.digest, bytes=e.size, used_by=sorted(e.users)) for e in cache.entries()],
            ),
        )


def create_app(settings: AgentSettings) -> FastAPI:
    agent = AdapterAgent(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=settings.vllm_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout, skip_auto_headers=("User-Agent",)) as session:
            agent._vllm = VllmClient(session, timeout=settings.vllm_timeout_s)
            agent._drain = VllmDrain(agent.vllm_url, session)
            manager = AdapterManager(agent, agent._drain, drain_timeout=settings.drain_timeout_s)
            async with in_background(agent.run(manager, settings.reconcile_interval_s)):
                yield

    app = FastAPI(title="Loraplane adapter agent", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.agent = agent
    add_handlers(app)

    @app.put("/v1/desired")
    async def put_desired(request: Request) -> JSONResponse:
        desired = parse_body(DesiredSet, await request.body())
        residency = await agent.put(desired, settings.desired_wait_s)
        return JSONResponse(residency.wire())

    @app.get("/residency")
    async def residency() -> JSONResponse:
        return JSONResponse(agent.residency().wire())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def prometheus() -> Response:
        agent.refresh_gauges()
        return Response(generate_latest(agent.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
