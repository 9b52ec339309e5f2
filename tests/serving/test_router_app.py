"""The router's HTTP surface besides the request path, with no replica up: which routes answer which methods,
the admin API's checks and a route's round trip, errors in OpenAI's shape. Through uvicorn on a real port
(`serve_router`), or in-process without the app's lifespan."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

from loraplane.serving.router import AdapterVersion, PublicModel, RouterSettings, ServerRoute, create_app
from loraplane.serving.router.errors import RouterError
from loraplane.serving.router.routes.admin import parse_route
from tests.serving.fixtures import ServeRouter
from tests.serving.router_helpers import ADMIN_KEY
from tests.serving.router_helpers import openai_error as error
from tests.support.kube import free_port

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def dead() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_read_routes_answer_get_and_head_and_the_inference_routes_only_post(serve_router: ServeRouter) -> None:
    with serve_router({"tiny": ServerRoute(base_model="tiny", replicas=[dead()])}) as router:
        for path in ("/healthz", "/readyz", "/metrics", "/v1/models", "/admin/v1/servers", "/admin/v1/servers/tiny"):
            get, head = router.http.get(path, headers=ADMIN), router.http.head(path, headers=ADMIN)
            assert get.status_code in (200, 503) and head.status_code == get.status_code, path
            assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"], path
        assert router.http.get("/readyz").json() == {"ready": False}
        for path in ("/v1/chat/completions", "/v1/completions"):
            assert router.http.get(path).status_code == 405
        assert router.http.post("/healthz").status_code == 405
        assert router.http.get("/openapi.json").status_code == 404


def test_the_admin_key_is_checked_before_the_body_is_read(serve_router: ServeRouter) -> None:
    with serve_router() as router:
        for key, status, kind in ((None, 401, "authentication_error"), ("user-key", 403, "permission_error")):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            resp = router.http.put("/admin/v1/servers/x", content=b"{not json", headers=headers)
            assert error(resp, status)["type"] == kind
        resp = router.http.put("/admin/v1/servers/x", content=b"{not json", headers=ADMIN)
        assert "not valid JSON" in error(resp, 400)["message"]


def test_a_route_is_put_listed_served_and_deleted(serve_router: ServeRouter) -> None:
    replica = dead()
    medical = PublicModel(name="medical", versions=[AdapterVersion(name="medical-v1", path="/adapters/m")])
    route = ServerRoute(base_model="tiny", replicas=[replica], adapters=[medical])
    with serve_router() as router:
        assert router.http.get("/v1/models").json() == {"object": "list", "data": []}
        put = router.put("tiny", route)
        assert put.status_code == 200, put.text
        assert put.json()["route"] == route.model_dump(mode="json")
        assert [r["url"] for r in put.json()["replicas"]] == [replica]
        assert router.status("tiny")["route"] == route.model_dump(mode="json")
        assert [s["name"] for s in router.admin("GET").json()["servers"]] == ["tiny"]
        cards = router.http.get("/v1/models").json()["data"]
        assert [(c["id"], c["parent"]) for c in cards] == [("medical", "tiny"), ("tiny", None)], "an adapter's parent"
        assert {c["root"] for c in cards} == {"tiny"}

        assert router.admin("DELETE", "/tiny").status_code == 204
        assert error(router.admin("GET", "/tiny"), 404)["code"] == "not_found"
        assert error(router.admin("DELETE", "/tiny"), 404)["code"] == "not_found"
        assert router.http.get("/v1/models").json()["data"] == []


def test_without_its_lifespan_a_disabled_admin_api_and_a_bug_answer_in_openai_shape() -> None:
    app = create_app(RouterSettings())  # no admin key: the admin API is off

    async def bug() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/bug", bug)

    async def calls() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # no lifespan: no proxy runs
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
            return [
                await client.post("/v1/chat/completions", json=chat),
                await client.get("/bug", headers={"x-request-id": "r-1"}),
                await client.get("/admin/v1/servers", headers=ADMIN),
            ]

    not_serving, bug_answer, admin = asyncio.run(calls())
    assert error(not_serving, 503)["type"] == "service_unavailable" and not_serving.headers["retry-after"] == "2"
    assert error(bug_answer, 500) == {
        "message": "Internal router error (RuntimeError).",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    assert bug_answer.headers["x-request-id"] == "r-1"
    assert error(admin, 404)["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (b"{oops", None, "The body is not valid JSON: "),
        (b'{"base_model": "b", "adapters": "nope"}', "adapters", "adapters: Input should be a valid list"),
        (b'{"base_model": "b", "replicas": [1]}', "replicas.0", "replicas.0: "),
    ],
)
def test_a_route_body_is_refused_naming_its_first_bad_field(body: bytes, param: str | None, message: str) -> None:
    with pytest.raises(RouterError) as info:
        parse_route(body)
    assert info.value.status == 400 and info.value.param == param and info.value.message.startswith(message)


def test_the_router_and_the_cli_need_no_httpx() -> None:
    """httpx is the tests' client only (the `dev` extra): the router's image does not install it."""
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import loraplane.serving.router.__main__, loraplane.cli.main, loraplane.cli.serve\n"
        "from loraplane.serving.router import RouterSettings, create_app\n"
        "create_app(RouterSettings())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
