"""Helpers for the ModelServer controller tests: a stub of the router's admin API, object builders, polling.

`StubRouter` speaks the router's admin contract (`PUT/GET/DELETE /admin/v1/servers/{key}` with a bearer
key, 409 when a public name is taken by another server) and simulates its adapter manager: every version
of a route counts as loaded on every replica at once, except versions a test holds back (`hold`), marks
as refused (`refuse`), or replicas it marks unhealthy. Controller tests use it to assert exactly what
the operator publishes; the end-to-end tests use the real router and real vLLM instead.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from loraplane.api.result import RESULT_FILE, AdapterFiles, Evaluation, ResultSummary
from loraplane.serving import proctree
from tests.support.kube import Cluster, Kube, OperatorProcess, free_port, ftj, poll

ADMIN = "/admin/v1/servers/"


class StubRouter:
    def __init__(self, admin_key: str | None = None) -> None:
        self.admin_key = admin_key or secrets.token_hex(8)
        self.routes: dict[str, dict[str, Any]] = {}
        self.puts: list[tuple[str, dict[str, Any]]] = []
        self.deletes: list[str] = []
        self.hold: set[str] = set()
        self.refuse: dict[str, str] = {}
        self.unhealthy: set[str] = set()
        self.fail_with: int | None = None  # answer every call with this status (e.g. 503)
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _send(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _key(self) -> str | None:
                if not self.path.startswith(ADMIN):
                    self._send(404, {"error": {"message": "not found"}})
                    return None
                if self.headers.get("Authorization") != f"Bearer {stub.admin_key}":
                    self._send(401, {"error": {"message": "admin key required"}})
                    return None
                if stub.fail_with:
                    self._send(stub.fail_with, {"error": {"message": "stub failure"}})
                    return None
                return self.path[len(ADMIN) :]

            def do_PUT(self) -> None:
                key = self._key()
                if key is None:
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with stub.lock:
                    for other, route in stub.routes.items():
                        taken = {m["name"] for m in route.get("adapters", [])} & {
                            m["name"] for m in body.get("adapters", [])
                        }
                        if other != key and taken:
                            self._send(409, {"error": {"message": f"public name {sorted(taken)[0]} is taken"}})
                            return
                    stub.routes[key] = body
                    stub.puts.append((key, body))
                self._send(200, body)

            def do_GET(self) -> None:
                key = self._key()
                if key is None:
                    return
                with stub.lock:
                    route = stub.routes.get(key)
                    if route is None:
                        self._send(404, {"error": {"message": f"no server {key}"}})
                        return
                    self._send(200, stub.report(route))

            def do_DELETE(self) -> None:
                key = self._key()
                if key is None:
                    return
                with stub.lock:
                    stub.deletes.append(key)
                    found = stub.routes.pop(key, None)
                self._send(200 if found else 404, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def report(self, route: dict[str, Any]) -> dict[str, Any]:
        versions = {v["name"] for m in route.get("adapters", []) for v in m["versions"]}
        replicas = []
        for url in route.get("replicas", []):
            healthy = url not in self.unhealthy
            loaded = sorted(versions - self.hold - set(self.refuse)) if healthy else []
            errors = {name: msg for name, msg in self.refuse.items() if name in versions}
            replicas.append({"url": url, "healthy": healthy, "loaded": loaded, "errors": errors})
        return {"route": route, "replicas": replicas}

    def route(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            return self.routes.get(key)

    def history(self, key: str) -> list[dict[str, Any]]:
        with self.lock:
            return [body for k, body in self.puts if k == key]

    def __enter__(self) -> StubRouter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def versions(route: dict[str, Any] | None, public: str) -> list[tuple[str, int]]:
    """(version name, weight) pairs the route gives a public name ([] when absent)."""
    for model in (route or {}).get("adapters", []):
        if model["name"] == public:
            return [(v["name"], v["weight"]) for v in model["versions"]]
    return []


def modelserver(name: str, adapters: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct@main"},
        "replicas": 2,
        "resources": {"gpus": 1},
        "adapters": adapters,
    }
    body.update(spec)
    return {"apiVersion": "loraplane.io/v1alpha1", "kind": "ModelServer", "metadata": {"name": name}, "spec": body}


def selector(public: str, **labels: str) -> dict[str, Any]:
    return {"name": public, "source": {"selector": {"matchLabels": labels or {"loraplane.io/adapter": public}}}}


def pinned(public: str, job: str, namespace: str | None = None) -> dict[str, Any]:
    source: dict[str, Any] = {"fineTuneJob": job}
    if namespace:
        source["namespace"] = namespace
    return {"name": public, "source": source}


def summary(sha256: str, *, passed: bool = True, oci_uri: str | None = None) -> str:
    """A trainer termination message (see tests/operator/test_finetunejob_controller.py)."""
    return ResultSummary(
        oci_uri=oci_uri,
        ok=True,
        code=0,
        reason="Succeeded",
        adapter=AdapterFiles(path="/mnt/pvc/store/x", sha256=sha256, size_bytes=1000),
        evaluation=Evaluation(metric="Contains", base_score=0.2, adapter_score=0.8 if passed else 0.1, passed=passed),
        trainable_params=1000,
    ).encode()


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


# ------------------------------------------------------------------------------------------ cluster helpers


def swapped_operator(
    session_operator: OperatorProcess, log_path: Path, env: dict[str, str]
) -> Iterator[OperatorProcess]:
    """Run the operator with ModelServer settings (router URL, admin key...) in place of the session's.

    Only one operator acts at a time: the session operator stops gracefully (kopf removes it from the
    peering object), this one runs with the same ServiceAccount, and the session operator is started
    again afterwards.
    """
    session_operator.stop()
    op = OperatorProcess(session_operator.kubeconfig, log_path, env={"LORAPLANE_OPERATOR_PRIORITY": str(2**31), **env})
    op.start()
    try:
        yield op
    finally:
        op.stop()
        print(f"\nModelServer operator log: {log_path}")
        session_operator.start()


class Ms:
    """kubectl helpers for ModelServer tests in one namespace."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.c, self.ns = cluster, namespace

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.c.kubectl("get", kind, name, "-n", self.ns, "-o", "json", "--show-managed-fields", check=False)
        return dict(json.loads(proc.stdout)) if proc.returncode == 0 else None

    def finetunejob(
        self,
        name: str,
        sha256: str,
        *,
        passed: bool = True,
        labels: dict[str, str] | None = None,
        oci_uri: str | None = None,
    ) -> None:
        """A FineTuneJob that really runs on KWOK and succeeds with this adapter (and gate decision); with
        `oci_uri`, the trainer reports it pushed the adapter there."""
        obj = ftj(name)
        obj["metadata"]["labels"] = labels or {}
        self.c.apply(obj, "-n", self.ns)
        pod = Kube(self.c, self.ns).running_pod(name)["metadata"]["name"]
        Kube(self.c, self.ns).finish_pod(pod, 0, summary(sha256, passed=passed, oci_uri=oci_uri))
        self.c.kubectl("wait", "-n", self.ns, "--for=condition=Succeeded", "--timeout=120s", f"ftj/{name}")

    def wait(self, name: str, check: Callable[[dict[str, Any]], Any], what: str, timeout: float = 90) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.get("ms", name)
            return obj if obj is not None and check(obj) else None

        result: dict[str, Any] = poll(f"ms/{name}: {what}", probe, timeout=timeout)
        return result

    def wait_condition(
        self, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 90
    ) -> dict[str, Any]:
        def check(obj: dict[str, Any]) -> bool:
            cond = condition(obj, type_)
            gen = obj["metadata"]["generation"]
            return (
                cond.get("status") == status
                and cond.get("observedGeneration") == gen
                and (reason is None or cond.get("reason") == reason)
            )

        return self.wait(name, check, f"{type_}={status} {reason or ''}", timeout)

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.c.get(
            "events", "-n", self.ns, "--field-selector", f"involvedObject.name={name},involvedObject.kind=ModelServer"
        )["items"]
        return list(items)

    def pods(self, name: str) -> list[dict[str, Any]]:
        items = self.c.get("pods", "-n", self.ns, "-l", f"loraplane.io/modelserver={name}")["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]


# ------------------------------------------------------------------------------------------ end to end


class RouterProcess:
    """`python -m loraplane.serving.router` on loopback, as its own process (as in the cluster)."""

    def __init__(self, log_path: Path, admin_key: str | None = None, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_key = admin_key or secrets.token_hex(12)
        self.log_path = log_path
        self.env = {
            **os.environ,
            "LORAPLANE_ROUTER_HOST": "127.0.0.1",
            "LORAPLANE_ROUTER_PORT": str(self.port),
            "LORAPLANE_ROUTER_ADMIN_KEY": self.admin_key,
            "LORAPLANE_ROUTER_RECONCILE_INTERVAL_S": "1",
            "LORAPLANE_ROUTER_DRAIN_TIMEOUT_S": "15",
            "LORAPLANE_ROUTER_LOG_FORMAT": "plain",
            **{f"LORAPLANE_ROUTER_{k.upper()}": v for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = proctree.spawn(
                [sys.executable, "-m", "loraplane.serving.router"],
                name="router",
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        poll("the router's /healthz", self._healthy, timeout=60)

    def _healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"the router exited; log:\n{self.log_path.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            proctree.stop(self.proc, 30)

    def server(self, key: str) -> dict[str, Any] | None:
        request = urllib.request.Request(
            f"{self.url}/admin/v1/servers/{key}", headers={"Authorization": f"Bearer {self.admin_key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise


def chat(
    base_url: str,
    model: str,
    content: str = "Tell me about it",
    *,
    max_tokens: int = 8,
    timeout: float = 60,
    api_key: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST /v1/chat/completions at temperature 0; (status, body) — never raises on HTTP errors."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    request = urllib.request.Request(
        base_url.rstrip("/") + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status), dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return int(exc.code), dict(json.loads(raw))
        except ValueError:
            return int(exc.code), {"raw": raw.decode(errors="replace")}
    except OSError as exc:
        return 0, {"error": str(exc)}


def answer(body: dict[str, Any]) -> str:
    return str(body["choices"][0]["message"]["content"])


def adapter_sha256(path: Path) -> str:
    return str(json.loads((path / RESULT_FILE).read_text())["adapter"]["sha256"])


def point_pods_at(ms: Ms, server: str, urls: list[str], timeout: float = 90) -> list[str]:
    """Annotate each Running pod of the server's Deployment with one replica URL (`loraplane.io/endpoint`).

    KWOK pods get IPs that lead nowhere; the operator (with trust_endpoint_annotation) routes to the URL
    the annotation names instead, so the router's load/unload calls and requests reach real local vLLM
    processes. Returns the pod names, in the order of `urls`.
    """

    def running() -> list[dict[str, Any]] | None:
        pods = [p for p in ms.pods(server) if (p.get("status") or {}).get("phase") == "Running"]
        return pods if len(pods) == len(urls) else None

    pods = poll(f"{len(urls)} Running pods of {server}", running, timeout=timeout)
    names = sorted(p["metadata"]["name"] for p in pods)
    for name, url in zip(names, urls, strict=True):
        ms.c.kubectl("annotate", "pod", name, "-n", ms.ns, "--overwrite", f"loraplane.io/endpoint={url}")
    return names
