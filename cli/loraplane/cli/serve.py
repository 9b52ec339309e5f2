"""`loraplane serve`: vLLM (CPU build) with every ready adapter in the store, behind the router, on localhost.

The same parts as on a cluster: the vLLM launch comes from `serving.vllm_args`, the adapters are
loaded by the adapter agent next to vLLM (which checks each one against its result.json and the replica
first; the router tells it which, and only routes), and clients talk to the router's OpenAI-compatible
endpoint. Each adapter is served under its store name;
the vLLM-side name carries the version (`<name>-<sha256[:12]>`), as the ModelServer controller does.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

import uvicorn
from rich.console import Console

from loraplane.api.modelserver import AdapterSource, ModelServerSpec, VllmSpec
from loraplane.cli.errors import ServeError
from loraplane.cli.store import AdapterStore, StoredAdapter
from loraplane.serving.agent.app import create_app as create_agent
from loraplane.serving.agent.settings import AgentSettings
from loraplane.serving.router import AdapterVersion, PublicModel, RouterSettings, ServerRoute, create_app
from loraplane.serving.vllm_args import ServedModel, build_args, cpu_profile
from loraplane.serving.vllm_process import VllmProcess

SERVER_NAME = "local"
RANKS = (8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class ServePlan:
    base_path: str  # the plain checkpoint vLLM loads
    base_name: str  # public name of the base model
    models: list[PublicModel] = field(default_factory=list)
    max_rank: int = 8


def public_base_name(uri: str) -> str:
    """`builtin://smollm2-135m-instruct` -> `smollm2-135m-instruct`; `hf://org/name@rev` -> `name`."""
    tail = uri.split("://", 1)[-1].split("@", 1)[0].rstrip("/")
    return tail.rsplit("/", 1)[-1].lower() or "base"


def version_of(adapter: StoredAdapter, weight: int = 100) -> AdapterVersion:
    return AdapterVersion(
        name=f"{adapter.name}-{adapter.sha256[:12]}", path=str(adapter.path), sha256=adapter.sha256, weight=weight
    )


def _plan(adapters: list[StoredAdapter], models: list[PublicModel]) -> ServePlan:
    bases = {a.base_model_path for a in adapters}
    if len(bases) > 1:
        detail = "; ".join(f"{a.name}: {a.base_model_uri}" for a in adapters)
        raise ServeError(f"one server serves one base model, these adapters need {len(bases)}: {detail}")
    first = adapters[0]
    ranks = [(a.result.adapter.r if a.result and a.result.adapter else None) or 8 for a in adapters]
    rank = next((r for r in RANKS if r >= max(ranks)), 0)
    if not rank:
        raise ServeError(f"adapter rank {max(ranks)} is above vLLM's largest ({RANKS[-1]})")
    return ServePlan(first.base_model_path, public_base_name(first.base_model_uri), models, rank)


def plan_from_store(store: AdapterStore, names: list[str] | None = None) -> ServePlan:
    """Serve `names` (default: every ready adapter), each under its own name."""
    adapters = [store.get(n) for n in names] if names else store.ready()
    if not adapters:
        raise ServeError(f"no trained adapter in {store.root}: train one first with `loraplane run FILE.yaml`")
    return _plan(adapters, [PublicModel(name=a.name, versions=[version_of(a)]) for a in adapters])


def _source_adapter(source: AdapterSource, store: AdapterStore, where: str) -> StoredAdapter:
    if source.fine_tune_job:
        return store.get(source.fine_tune_job)
    if source.uri and source.uri.startswith("file://"):
        path = Path(source.uri.removeprefix("file://"))
        entry = store.entry(path) if path.is_dir() else None
        if entry is None or not entry.ready:
            raise ServeError(f"{where}.uri: {source.uri} is not a finished adapter directory (no result.json)")
        return entry
    raise ServeError(
        f"{where}: local mode serves fineTuneJob (a name in the store) or file:// sources, not "
        f"{'a selector' if source.selector else source.uri}"
    )


def plan_from_modelserver(spec: ModelServerSpec, store: AdapterStore) -> ServePlan:
    """A ModelServer's adapters[] (stable and canary versions) from the local store."""
    adapters: list[StoredAdapter] = []
    models: list[PublicModel] = []
    for i, served in enumerate(spec.adapters):
        where = f"spec.adapters[{i}]"
        stable = _source_adapter(served.source, store, f"{where}.source")
        adapters.append(stable)
        versions = [version_of(stable)]
        if served.canary and served.canary.weight > 0:
            canary = _source_adapter(served.canary.source, store, f"{where}.canary.source")
            adapters.append(canary)
            versions = [version_of(stable, 100 - served.canary.weight), version_of(canary, served.canary.weight)]
        models.append(PublicModel(name=served.name, versions=versions))
    if not adapters:
        raise ServeError("spec.adapters: the ModelServer lists no adapters")
    plan = _plan(adapters, models)
    return ServePlan(plan.base_path, public_base_name(spec.base_model.uri), models, plan.max_rank)


def context_length(base: Path, cap: int = 1024) -> int:
    """--max-model-len: the model's own limit, capped (prompts here are short; the KV cache stays small)."""
    try:
        config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return cap
    return min(cap, int(config.get("max_position_embeddings") or cap))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post_json(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        return json.loads(resp.read())


class LocalServer:
    """vLLM + router on loopback as a context manager; `url` is the OpenAI base URL (…/v1)."""

    def __init__(
        self, plan: ServePlan, *, port: int = 8000, log_dir: Path, console: Console, host: str = "127.0.0.1"
    ) -> None:
        self.plan, self.port, self.host, self.console = plan, port, host, console
        log_dir.mkdir(parents=True, exist_ok=True)
        vllm_spec = VllmSpec(
            max_loras=max(1, min(len(plan.models) * 2, 8)),
            max_lora_rank=cast(Literal[8, 16, 32, 64, 128, 256], plan.max_rank),
            max_model_len=context_length(Path(plan.base_path)),
            dtype="float32",
        )
        launch = build_args(
            ServedModel(path=plan.base_path, name=plan.base_name),
            vllm_spec,
            cpu_profile(),
            port=free_port(),
            adapter_count=sum(len(m.versions) for m in plan.models),
            python=sys.executable,  # the interpreter that has vLLM (not whatever python3 is on PATH)
        )
        self.vllm = VllmProcess(launch, log_dir / "vllm.log")
        self.vllm_exit_code: int | None = None  # once closed: 0 when vLLM drained and exited by itself
        self.agent_settings = AgentSettings(
            host="127.0.0.1",  # the router reaches it at the replica's host
            port=free_port(),
            vllm_url=self.vllm.url,
            cache_dir=log_dir / "agent-cache",  # pulls only: local versions are loaded where they are
            max_lora_rank=plan.max_rank,
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._agent: uvicorn.Server | None = None
        self._agent_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> LocalServer:
        from loraplane.serving.router.server import router_server

        try:
            with self.console.status(f"starting vLLM (CPU) on {self.plan.base_name}; log {self.vllm.log_path}"):
                self.vllm.start()
            agent = self.agent_settings
            config = uvicorn.Config(create_agent(agent), host=agent.host, port=agent.port, log_level="warning")
            self._agent = uvicorn.Server(config)
            self._agent_thread = threading.Thread(target=self._agent.run, name="adapter-agent", daemon=True)
            self._agent_thread.start()
            route = ServerRoute(
                base_model=self.plan.base_name,
                replicas=[self.vllm.url],
                adapters=self.plan.models,
                agent_port=agent.port,
            )
            app = create_app(RouterSettings(host=self.host, port=self.port), routes={SERVER_NAME: route})
            self._server = router_server(app, self.host, self.port)
            self._thread = threading.Thread(target=self._server.run, name="router", daemon=True)
            self._thread.start()
            with self.console.status("loading the adapters (checked against their result.json first)"):
                self._wait_routable(timeout=180)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_routable(self, timeout: float) -> None:
        """Poll until every public model answers a one-token completion through the router."""
        pending = {m.name for m in self.plan.models} | {self.plan.base_name}
        deadline = time.monotonic() + timeout
        last = ""
        while pending and time.monotonic() < deadline:
            if self._thread is not None and not self._thread.is_alive():
                raise ServeError(f"the router stopped (is port {self.port} already in use?)")
            for model in sorted(pending):
                try:
                    _post_json(self.url + "/completions", {"model": model, "prompt": "Hi", "max_tokens": 1})
                    pending.discard(model)
                except urllib.error.HTTPError as exc:
                    last = f"{model}: HTTP {exc.code} {exc.read()[:300]!r}"
                except (urllib.error.URLError, OSError) as exc:
                    last = f"{model}: {exc}"
            if pending:
                time.sleep(0.5)
        if pending:
            raise ServeError(f"not routable after {timeout:.0f}s: {sorted(pending)} (last error {last})")

    def close(self) -> None:
        """The router stops taking requests and drains, then vLLM drains and stops (its whole process tree)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._agent is not None:
            self._agent.should_exit = True
        if self._agent_thread is not None:
            self._agent_thread.join(timeout=30)
        self.vllm_exit_code = self.vllm.stop()

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()
