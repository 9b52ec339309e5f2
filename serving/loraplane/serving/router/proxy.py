"""The request path: authenticate, check the body, choose version and replica, forward, pass the answer back.

Non-streaming answers are read whole and returned; streaming answers (SSE) are relayed as they arrive,
whole events at a time (sse.py). A request moves to another replica on a connection failure, a 5xx, or "adapter not
loaded" (the replica restarted) — but only before its first byte reached the client.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from loraplane.serving.router import auth, sse
from loraplane.serving.router.errors import (
    RouterError,
    internal_error,
    model_not_found,
    new_request_id,
    too_large,
    unavailable,
    upstream_timeout,
)
from loraplane.serving.router.metrics import RouterMetrics
from loraplane.serving.router.request import parse
from loraplane.serving.router.routing import SpreadPoints, choose_version, pick_point, rank_replicas
from loraplane.serving.router.settings import RouterSettings
from loraplane.serving.router.state import RouterState
from loraplane.serving.router.table import ServerRoute, Target
from loraplane.serving.router.upstream import Response as UpstreamResponse
from loraplane.serving.router.upstream import UpstreamClient, UpstreamError, UpstreamTimeout

access_log = logging.getLogger("loraplane.router.access")
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}  # the path (here and upstream) -> name
UPSTREAM_PATHS = {name: path for path, name in ENDPOINTS.items()}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it grows past `limit` (whatever Content-Length claims)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(slots=True)
class Call:
    """One request on its way: what the access log, the metrics and the retries need to know about it."""

    rid: str
    start: float  # perf_counter at arrival
    endpoint: str  # "chat" or "completions"
    label: str = "-"  # the public model name once known (metrics label)
    version: str = ""  # what vLLM is asked for: an adapter version or the base model ("" before that is known)
    payload: bytes = b""  # the body sent upstream
    stream: bool = False
    strip_usage: bool = False  # the router asked for the stream's usage event; the client did not


@dataclass(frozen=True, slots=True)
class Failed:
    """A replica's error answer (a 5xx, or 404 for an adapter it lost): passed through if no replica does better."""

    status: int
    content: bytes
    content_type: str


class Proxy:
    def __init__(
        self,
        state: RouterState,
        upstream: UpstreamClient,
        settings: RouterSettings,
        metrics: RouterMetrics,
        keys: dict[str, frozenset[str] | None] | None,
    ) -> None:
        self.state, self.upstream, self.settings, self.metrics, self.keys = state, upstream, settings, metrics, keys
        self.spread = SpreadPoints()
        # Whole answer within the budget; a stream must keep sending (the budget is per chunk).
        budget = settings.request_timeout_s
        self.budgets: dict[bool, dict[str, float]] = {False: {"total": budget}, True: {"read_timeout": budget}}

    async def handle(self, request: Request, endpoint: str) -> Response:
        call = Call(request.headers.get("x-request-id") or new_request_id(), time.perf_counter(), endpoint)
        try:
            who = auth.caller(request.headers, self.keys)
            data = parse(await read_body(request, self.settings.max_body_bytes), endpoint)
            model = data["model"]
            target = self.state.targets.get(model)
            if target is None or not who.may_use(model):
                raise model_not_found(model)
            call.label = model
            call.version = target.route.base_model
            if target.model is not None:
                sticky = request.headers.get(self.settings.sticky_header) or data.get("user")
                call.version = choose_version(
                    target.model, pick_point(sticky if isinstance(sticky, str) else None, model, self.spread)
                ).name
            data["model"] = call.version
            call.stream = data.get("stream") is True
            if call.stream and not sse.wants_usage(data):  # ask for it (the token metrics), cut it out again
                data["stream_options"] = {**(data.get("stream_options") or {}), "include_usage": True}
                call.strip_usage = True
            call.payload = orjson.dumps(data)
            return await self._forward(target, call)
        except RouterError as exc:
            self._done(call, None, exc.status, None, exc.message)
            return exc.response(call.rid)
        except Exception as exc:  # a bug: still answer in OpenAI's shape, with the request id to find the log
            access_log.exception("request %s failed", call.rid)
            error = internal_error(exc)
            self._done(call, None, 500, None, error.message)
            return error.response(call.rid)

    async def _forward(self, target: Target, call: Call) -> Response:
        """Try the usable replicas, best first, until one answers (`_attempt`); with none left, pass the last
        replica's error answer through, or answer 503 when no replica answered at all."""
        is_adapter = target.model is not None
        tried: set[str] = set()
        last: Failed | None = None
        while (replica := self._next_replica(target.route, call.version, is_adapter, tried)) is not None:
            if tried:
                self.metrics.retry(call.label, call.version)
            tried.add(replica)
            outcome = await self._attempt(replica, call, is_adapter)
            if isinstance(outcome, Response):
                return outcome
            if outcome is not None:
                last = outcome
        if last is not None:  # every replica failed: pass the last upstream error through
            self._done(call, None, last.status, None, "upstream error")
            headers = {"x-request-id": call.rid}
            return Response(last.content, last.status, media_type=last.content_type or None, headers=headers)
        what = f"adapter version {call.version}" if is_adapter else f"base model {call.version}"
        raise unavailable(f"No healthy replica holds {what} yet; retry shortly.", self.settings.retry_after_s)

    def _next_replica(self, route: ServerRoute, version: str, is_adapter: bool, tried: set[str]) -> str | None:
        """The best usable replica not tried yet (fewest outstanding requests, ties in turn), or None."""
        state = self.state
        state.rotation += 1
        ranked = rank_replicas(
            route.replicas,
            usable=lambda r: state.usable(r, version if is_adapter else None),
            outstanding=state.outstanding,
            exclude=frozenset(tried),
            rotation=state.rotation,
        )
        return ranked[0] if ranked else None

    async def _attempt(self, replica: str, call: Call, is_adapter: bool) -> Response | Failed | None:
        """One try on `replica`: the client's answer (a stream goes on in `_relay`, which then releases the replica),
        or why to try another replica: its error answer (`Failed`), or None when it never answered (unreachable,
        or gone before answering: marked unhealthy). No answer within the budget raises 504: never retried."""
        state, label, version = self.state, call.label, call.version
        state.acquire(replica, version)
        resp: UpstreamResponse | None = None
        handed_over = False
        try:
            resp = await self.upstream.post(
                replica, UPSTREAM_PATHS[call.endpoint], call.payload, call.rid, **self.budgets[call.stream]
            )
            if resp.status >= 500 or (resp.status == 404 and is_adapter):
                failed = Failed(resp.status, await resp.read(), resp.content_type)
                if resp.status == 404:
                    state.not_loaded(replica, version)
                else:
                    self.metrics.error(label, version, "5xx")
                return failed
            if call.stream and resp.status == 200:
                first = await resp.chunk()
                ttft = time.perf_counter() - call.start
                handed_over = True
                return StreamingResponse(
                    self._relay(resp, first, replica, call, ttft),
                    status_code=200,
                    media_type="text/event-stream",
                    headers={"x-request-id": call.rid, "cache-control": "no-cache"},
                )
            status, content_type, content = resp.status, resp.content_type, await resp.read()
        except UpstreamTimeout as exc:  # connected, but no answer within the budget
            self.metrics.error(label, version, "timeout")
            raise upstream_timeout(self.settings.request_timeout_s) from exc
        except UpstreamError:  # unreachable, or gone before answering (nothing reached the client yet)
            self.metrics.error(label, version, "connect" if resp is None else "disconnect")
            state.replica_failed(replica)
            return None
        finally:
            if not handed_over:
                if resp is not None:
                    resp.release()
                state.release(replica, version)
        if status == 200:
            self._count_tokens(call, content)
        self._done(call, replica, status, None, None)
        return Response(content, status, media_type=content_type or None, headers={"x-request-id": call.rid})

    async def _relay(
        self, resp: UpstreamResponse, first: bytes, replica: str, call: Call, ttft: float
    ) -> AsyncIterator[bytes]:
        """The stream as it comes, in whole events; the usage event counted (and cut out if the router asked)."""
        outcome: int | str = 200
        rest = b""
        try:
            chunk = first
            while chunk:
                events, rest = sse.split_events(rest + chunk if rest else chunk)
                if b'"usage":{' in chunk:
                    events = [e for e in events if not self._took_usage(call, e)]
                if events:
                    yield b"".join(events)
                chunk = await resp.chunk()
            if rest:
                yield rest
        except UpstreamError as exc:
            outcome = "stream_error"
            self.metrics.error(call.label, call.version, "stream")
            access_log.warning("stream from %s broke after the first byte: %s", replica, exc)
        finally:
            resp.release()
            self.state.release(replica, call.version)
            self._done(call, replica, outcome, ttft, None)

    def _took_usage(self, call: Call, event: bytes) -> bool:
        """Count a stream's usage event; True when it is to be cut out (the router asked for it)."""
        usage = sse.final_usage(event)
        if usage is None:
            return False
        self._add_usage(call, usage)
        return call.strip_usage

    def _count_tokens(self, call: Call, content: bytes) -> None:
        try:
            usage = orjson.loads(content).get("usage") or {}
        except (ValueError, AttributeError):
            return
        self._add_usage(call, usage)

    def _add_usage(self, call: Call, usage: dict[str, Any]) -> None:
        for kind in ("prompt_tokens", "completion_tokens"):
            value = usage.get(kind)
            if isinstance(value, int) and value > 0:
                self.metrics.token_count(call.label, call.version, kind.removesuffix("_tokens"), value)

    def _done(self, call: Call, replica: str | None, status: int | str, ttft: float | None, error: str | None) -> None:
        elapsed = time.perf_counter() - call.start
        label, version = call.label, call.version or "-"
        if label == "-":
            self.metrics.request(label, version, status, None, None)
        else:
            answered = isinstance(status, int) and status < 400
            ttft = (ttft if ttft is not None else elapsed) if answered else None
            self.metrics.request(label, version, status, elapsed, ttft)
        if access_log.isEnabledFor(logging.INFO):
            record = {
                "request_id": call.rid,
                "model": label,
                "version": call.version or None,
                "replica": replica,
                "status": status,
                "ms": round(elapsed * 1000, 2),
            }
            if ttft is not None:
                record["ttft_ms"] = round(ttft * 1000, 2)
            if error:
                record["error"] = error
            access_log.info(json.dumps(record))
