"""The request path: authenticate, check the body, choose version and replica, forward, pass the answer back.

Non-streaming answers are read whole and returned; streaming answers (SSE) are relayed chunk by chunk
as they arrive. A request moves to another replica on a connection failure, a 5xx, or "adapter not
loaded" (the replica restarted) — but only before its first byte reached the client.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from loraplane.serving.router import auth
from loraplane.serving.router.errors import (
    RouterError,
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
from loraplane.serving.router.table import Target
from loraplane.serving.router.upstream import Response as UpstreamResponse
from loraplane.serving.router.upstream import UpstreamClient, UpstreamError, UpstreamTimeout

access_log = logging.getLogger("loraplane.router.access")
UPSTREAM_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}


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
        rid = request.headers.get("x-request-id") or new_request_id()
        start = time.perf_counter()
        label = "-"
        try:
            who = auth.caller(request.headers, self.keys)
            data = parse(await read_body(request, self.settings.max_body_bytes), endpoint)
            model = data["model"]
            target = self.state.targets.get(model)
            if target is None or not who.may_use(model):
                raise model_not_found(model)
            label = model
            upstream = target.route.base_model
            if target.model is not None:
                sticky = request.headers.get(self.settings.sticky_header) or data.get("user")
                upstream = choose_version(
                    target.model, pick_point(sticky if isinstance(sticky, str) else None, model, self.spread)
                ).name
            data["model"] = upstream
            payload = orjson.dumps(data)
            return await self._forward(target, upstream, payload, endpoint, bool(data.get("stream")), rid, label, start)
        except RouterError as exc:
            self._done(rid, label, None, None, exc.status, start, None, exc.message)
            return exc.response(rid)
        except Exception as exc:  # a bug: still answer in OpenAI's shape, with the request id to find the log
            access_log.exception("request %s failed", rid)
            error = RouterError(500, f"Internal router error ({type(exc).__name__}).", type="server_error")
            self._done(rid, label, None, None, 500, start, None, error.message)
            return error.response(rid)

    async def _forward(
        self,
        target: Target,
        upstream: str,
        payload: bytes,
        endpoint: str,
        stream: bool,
        rid: str,
        label: str,
        start: float,
    ) -> Response:
        route, state = target.route, self.state
        is_adapter = target.model is not None
        tried: set[str] = set()
        last: tuple[int, bytes, str] | None = None
        while True:
            state.rotation += 1
            ranked = rank_replicas(
                route.replicas,
                usable=lambda r: state.usable(r, upstream if is_adapter else None),
                outstanding=state.outstanding,
                exclude=frozenset(tried),
                rotation=state.rotation,
            )
            if not ranked:
                if last is not None:  # every replica failed: pass the last upstream error through
                    status, content, ctype = last
                    self._done(rid, label, upstream, None, status, start, None, "upstream error")
                    return Response(content, status, media_type=ctype or None, headers={"x-request-id": rid})
                what = f"adapter version {upstream}" if is_adapter else f"base model {upstream}"
                raise unavailable(f"No healthy replica holds {what} yet; retry shortly.", self.settings.retry_after_s)
            replica = ranked[0]
            if tried:
                self.metrics.retry(label)
            tried.add(replica)
            state.acquire(replica, upstream)
            handed_over = False
            try:
                try:
                    resp = await self.upstream.post(
                        replica, UPSTREAM_PATHS[endpoint], payload, rid, **self.budgets[stream]
                    )
                except UpstreamTimeout as exc:  # connected, but no answer within the budget
                    self.metrics.error(label, "timeout")
                    raise upstream_timeout(self.settings.request_timeout_s) from exc
                except UpstreamError:  # not reachable, or gone before answering: another replica may answer
                    self.metrics.error(label, "connect")
                    state.replica_failed(replica)
                    continue
                try:
                    if resp.status >= 500 or (resp.status == 404 and is_adapter):
                        content = await resp.read()
                        if resp.status == 404:
                            state.not_loaded(replica, upstream)
                        else:
                            self.metrics.error(label, "5xx")
                        last = (resp.status, content, resp.content_type)
                        continue
                    if stream and resp.status == 200:
                        first = await resp.chunk()
                        ttft = time.perf_counter() - start
                        handed_over = True
                        return StreamingResponse(
                            self._relay(resp, first, replica, upstream, rid, label, start, ttft),
                            status_code=200,
                            media_type="text/event-stream",
                            headers={"x-request-id": rid, "cache-control": "no-cache"},
                        )
                    content = await resp.read()
                except UpstreamTimeout as exc:
                    self.metrics.error(label, "timeout")
                    raise upstream_timeout(self.settings.request_timeout_s) from exc
                except UpstreamError:  # the replica went away before answering: nothing was sent yet
                    self.metrics.error(label, "disconnect")
                    state.replica_failed(replica)
                    continue
                finally:
                    if not handed_over:
                        resp.release()
            finally:
                if not handed_over:
                    state.release(replica, upstream)
            if resp.status == 200:
                self._count_tokens(label, content)
            self._done(rid, label, upstream, replica, resp.status, start, None, None)
            return Response(content, resp.status, media_type=resp.content_type or None, headers={"x-request-id": rid})

    async def _relay(
        self,
        resp: UpstreamResponse,
        first: bytes,
        replica: str,
        upstream: str,
        rid: str,
        label: str,
        start: float,
        ttft: float,
    ) -> AsyncIterator[bytes]:
        outcome: int | str = 200
        try:
            yield first
            while chunk := await resp.chunk():
                if b'"usage":{' in chunk:
                    self._count_stream_usage(label, chunk)
                yield chunk
        except UpstreamError as exc:
            outcome = "stream_error"
            self.metrics.error(label, "stream")
            access_log.warning("stream from %s broke after the first byte: %s", replica, exc)
        finally:
            resp.release()
            self.state.release(replica, upstream)
            self._done(rid, label, upstream, replica, outcome, start, ttft, None)

    def _count_tokens(self, label: str, content: bytes) -> None:
        try:
            usage = orjson.loads(content).get("usage") or {}
        except (ValueError, AttributeError):
            return
        self._add_usage(label, usage)

    def _count_stream_usage(self, label: str, chunk: bytes) -> None:
        for line in chunk.split(b"\n"):
            if line.startswith(b"data: {") and b'"usage":{' in line:
                try:
                    self._add_usage(label, orjson.loads(line[6:]).get("usage") or {})
                except ValueError:
                    continue

    def _add_usage(self, label: str, usage: dict[str, Any]) -> None:
        for kind in ("prompt_tokens", "completion_tokens"):
            value = usage.get(kind)
            if isinstance(value, int) and value > 0:
                self.metrics.token_count(label, kind.removesuffix("_tokens"), value)

    def _done(
        self,
        rid: str,
        label: str,
        upstream: str | None,
        replica: str | None,
        status: int | str,
        start: float,
        ttft: float | None,
        error: str | None,
    ) -> None:
        elapsed = time.perf_counter() - start
        if label == "-":
            self.metrics.request(label, status, None, None)
        else:
            answered = isinstance(status, int) and status < 400
            self.metrics.request(label, status, elapsed, (ttft if ttft is not None else elapsed) if answered else None)
        if access_log.isEnabledFor(logging.INFO):
            record = {
                "request_id": rid,
                "model": label,
                "version": upstream,
                "replica": replica,
                "status": status,
                "ms": round(elapsed * 1000, 2),
            }
            if ttft is not None:
                record["ttft_ms"] = round(ttft * 1000, 2)
            if error:
                record["error"] = error
            access_log.info(json.dumps(record))
