"""Run the router in-process on a real port (uvicorn in a thread) and talk to it over HTTP, as clients do."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from loraplane.api.result import TrainingResult
from loraplane.serving.router import AdapterVersion, PublicModel, RouterSettings, ServerRoute, create_app
from loraplane.serving.router.server import router_server
from loraplane.serving.router.state import RouterState
from tests.support.kube import free_port, poll
from tests.support.serving import BASE_NAME

ADMIN_KEY = "admin-secret"


def openai_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    """The error object of `resp`, checked: the status, OpenAI's four fields, a message, a request id."""
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    assert resp.headers["x-request-id"]
    return body


def version(name: str, path: Path, weight: int = 100) -> AdapterVersion:

    result = TrainingResult.read(path)
    assert result is not None and result.adapter is not None, f"{path} has no result.json"
    sha = result.adapter.sha256
    return AdapterVersion(name=name, path=str(path), sha256=sha, weight=weight)


def route(replicas: list[str], adapters: Mapping[str, Path]) -> ServerRoute:
    """Each adapter served under its own public name with one version named after it."""
    return ServerRoute(
        base_model=BASE_NAME,
        replicas=replicas,
        adapters=[PublicModel(name=name, versions=[version(name, path)]) for name, path in adapters.items()],
    )


class Router:
    def __init__(self, url: str, server: uvicorn.Server, app: FastAPI) -> None:
        self.url, self.server, self.app = url, server, app
        self.http = httpx.Client(base_url=url, timeout=120)

    def chat(
        self,
        model: str,
        content: str = "Hello there",
        *,
        max_tokens: int = 12,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> httpx.Response:
        request = {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0}
        request |= {"max_tokens": max_tokens, **(body or {})}
        return self.http.post("/v1/chat/completions", json=request, headers=headers)

    def answer(self, model: str, content: str = "Hello there", max_tokens: int = 12) -> str:
        resp = self.chat(model, content, max_tokens=max_tokens)
        assert resp.status_code == 200, resp.text
        return str(resp.json()["choices"][0]["message"]["content"])

    def admin(self, method: str, path: str = "", body: Any = None, key: str | None = ADMIN_KEY) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return self.http.request(method, "/admin/v1/servers" + path, json=body, headers=headers)

    def put(self, name: str, server_route: ServerRoute) -> httpx.Response:
        return self.admin("PUT", f"/{name}", server_route.model_dump())

    def wait_routable(self, *models: str, timeout: float = 240) -> None:
        """Poll until each model answers 200 through the router (adapters are loaded asynchronously)."""
        for model in models:

            def answers(model: str = model) -> bool:
                return self.chat(model, max_tokens=1).status_code == 200

            poll(f"{model} routable", answers, timeout=timeout)

    @property
    def state(self) -> RouterState:
        """The live state (in-process only): what tests inspect that no endpoint shows, e.g. requests in flight."""
        state: RouterState = self.app.state.router_state
        return state

    def metric(self, name: str, **labels: str) -> float:
        """The router's /metrics samples `name` with these labels (others any: summed), 0 when none was recorded."""
        return math.fsum(
            sample.value
            for family in text_string_to_metric_families(self.http.get("/metrics").text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def status(self, name: str) -> dict[str, Any]:
        resp = self.admin("GET", f"/{name}")
        assert resp.status_code == 200, resp.text
        data: dict[str, Any] = resp.json()
        return data


@contextmanager
def running_router(routes: Mapping[str, ServerRoute] | None = None, **settings: Any) -> Iterator[Router]:
    """The router app served by uvicorn on a free loopback port for the duration of the block."""
    port = free_port()
    config = RouterSettings(
        host="127.0.0.1",
        port=port,
        admin_key=ADMIN_KEY,
        **{"reconcile_interval_s": 1.0, "drain_timeout_s": 30, **settings},
    )
    app = create_app(config, routes)
    server = router_server(app, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    poll("router up", lambda: server.started, timeout=30)
    router = Router(url, server, app)
    try:
        yield router
    finally:
        router.http.close()
        server.should_exit = True
        thread.join(timeout=30)
