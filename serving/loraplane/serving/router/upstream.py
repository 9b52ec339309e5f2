"""The router's hop to vLLM: a lean HTTP/1.1 client for the one request it sends, a JSON POST to a replica.

Why not aiohttp's client here (it stays for the adapter manager's calls): on the request path it was half
of the router's CPU per request (py-spy on the router under bench/router_overhead-like traffic), most of it
generality this hop never uses: cookies, redirects, proxies, auth, a payload registry, middlewares. This
client does what the hop needs and nothing else: plain http://, a keep-alive pool per replica, a request
with Content-Length, and an answer whose body comes with Content-Length, chunked, or until the connection
closes, parsed by httptools (llhttp, the parser uvicorn uses).

Failures are typed, so the proxy can tell "the replica never got it" (try another) from "too slow" (504):

    ConnectFailed    no connection: refused, unreachable, or not within the connect timeout
    Disconnected     the connection closed or broke before the answer was complete
    UpstreamTimeout  nothing arrived within the read timeout, or the total budget ran out (a TimeoutError)

A pooled connection that the replica closed while it was idle (its keep-alive timeout) fails before any
byte of an answer arrives; such a request is sent once more, on a new connection.
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 1 << 20  # buffered answer bytes at which reading from the replica pauses until the relay catches up
MAX_IDLE = 512  # idle keep-alive connections kept per replica; more are closed when released


class UpstreamError(Exception):
    """A request to a replica failed."""


class ConnectFailed(UpstreamError):
    """No connection to the replica: nothing was sent."""


class Disconnected(UpstreamError):
    """The connection closed or broke before the answer was complete."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """No byte within the read timeout, or the total budget ran out."""


def _expire(waiter: asyncio.Future[None], message: str) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout(message))


class Response:
    """One answer: `status` and `content_type` once its head is in; the body whole (`read`) or as it comes
    (`chunk`). `release()` must be called: it returns the connection to the pool, or closes it."""

    def __init__(self, conn: _Connection, deadline: float | None, read_timeout: float | None) -> None:
        self._conn, self._deadline, self._read_timeout = conn, deadline, read_timeout
        self.status = 0
        self.content_type = ""
        self.started = False  # a byte of the answer arrived
        self._head_done = False
        self._done = False
        self._framed = False  # Content-Length or chunked; otherwise the body ends when the connection closes
        self._error: UpstreamError | None = None
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._released = False

    # -- fed by the connection ------------------------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        if not data:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if not self._done and self._error is None:
            self._error = error
            self._wake()

    # -- read by the proxy ----------------------------------------------------------------------------
    async def _wait(self) -> None:
        """Until the connection has something new (data, end, failure); UpstreamTimeout past a budget."""
        if self._error is not None:
            raise self._error
        loop = self._conn.loop
        waiter = self._waiter = loop.create_future()
        when, why = None, ""
        if self._read_timeout is not None:
            when, why = loop.time() + self._read_timeout, f"no data for {self._read_timeout:g}s"
        if self._deadline is not None and (when is None or self._deadline < when):
            when, why = self._deadline, "the request budget ran out"
        timer = loop.call_at(when, _expire, waiter, why) if when is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self._error is not None:
            raise self._error

    async def head(self) -> None:
        while not self._head_done:
            await self._wait()

    async def chunk(self) -> bytes:
        """What arrived since the last call (waiting for something); b"" once the body is complete."""
        while not self._chunks:
            if self._done:
                return b""
            await self._wait()
        data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks.clear()
        self._buffered = 0
        self._conn.resume()
        return data

    async def read(self) -> bytes:
        """The whole body (taken as it arrives, so reading never stays paused past the high-water mark)."""
        parts = []
        while chunk := await self.chunk():
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        """Give the connection back to the pool if the answer is complete and it may be reused; else close it."""
        if not self._released:
            self._released = True
            self._conn.finish(self._done and self._error is None)


class _Connection(asyncio.Protocol):
    """One keep-alive TCP connection to a replica, carrying one request at a time."""

    def __init__(self, pool: list[_Connection], loop: asyncio.AbstractEventLoop) -> None:
        self.pool, self.loop = pool, loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.closed = False
        self.keep_alive = False
        self.paused = False

    def send(self, data: bytes, deadline: float | None, read_timeout: float | None) -> Response:
        assert self.transport is not None
        self.response = response = Response(self, deadline, read_timeout)
        self.keep_alive = False
        self.transport.write(data)
        return response

    def finish(self, reusable: bool) -> None:
        self.response = None
        if reusable and self.keep_alive and not self.closed and len(self.pool) < MAX_IDLE:
            self.resume()
            self.pool.append(self)
        elif self.transport is not None:
            self.transport.close()

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    # -- asyncio.Protocol -----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: this connection is out of step
            assert self.transport is not None
            self.transport.close()
            return
        response.started = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(Disconnected(f"malformed answer from the model server: {exc}"))
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self in self.pool:
            self.pool.remove(self)
        response = self.response
        if response is None or response._done:
            return
        if response._head_done and not response._framed and exc is None:  # the body ran until the close
            response._done = True
            response._wake()
        else:
            reason = f": {exc}" if exc else ""
            response._fail(Disconnected(f"the model server closed the connection mid-answer{reason}"))

    # -- httptools callbacks --------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        lower = name.lower()
        if lower == b"content-type":
            self.response.content_type = value.decode("latin-1")
        elif lower in (b"content-length", b"transfer-encoding"):
            self.response._framed = True

    def on_headers_complete(self) -> None:
        assert self.response is not None
        self.response.status = self.parser.get_status_code()
        self.response._head_done = True
        self.response._wake()

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response._feed(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.keep_alive = self.parser.should_keep_alive()
        self.response._done = True
        self.response._wake()


class UpstreamClient:
    """Keep-alive connection pools to replicas (by base URL, e.g. http://10.0.0.7:8000) and the POST on them."""

    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self._pools: dict[str, list[_Connection]] = {}
        self._hosts: dict[str, tuple[str, int, str]] = {}  # base URL -> host, port, Host header
        self._loop: asyncio.AbstractEventLoop | None = None  # the pools' loop, known from the first call

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop, looked up once: on Python 3.11 every get_running_loop() is a getpid() system call."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _origin(self, url: str) -> tuple[str, int, str]:
        origin = self._hosts.get(url)
        if origin is None:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise ConnectFailed(f"{url}: only http://host[:port] model server URLs are supported")
            port = parts.port or 80
            origin = self._hosts[url] = (parts.hostname, port, parts.netloc)
        return origin

    async def _connect(self, url: str, pool: list[_Connection]) -> _Connection:
        host, port, _ = self._origin(url)
        loop = self._running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(pool, loop), host, port)
        except TimeoutError as exc:
            raise ConnectFailed(f"cannot connect to {url} within {self.connect_timeout:g}s") from exc
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {url}: {exc}") from exc
        return conn

    async def post(
        self,
        url: str,
        path: str,
        body: bytes,
        request_id: str,
        *,
        total: float | None = None,
        read_timeout: float | None = None,
    ) -> Response:
        """POST JSON `body` to `url` + `path`; returns once the answer's head is in (the body is still to read).

        `total`: budget for everything from now until the body is read; `read_timeout`: for each wait for data.
        """
        _, _, host = self._origin(url)
        pool = self._pools.setdefault(url, [])
        deadline = self._running_loop().time() + total if total is not None else None
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-Id: {request_id}\r\n\r\n"
        ).encode("latin-1") + body
        fresh = False
        while True:
            reused = bool(pool) and not fresh
            conn = pool.pop() if reused else await self._connect(url, pool)
            response = conn.send(request, deadline, read_timeout)
            try:
                await response.head()
                return response
            except Disconnected:
                response.release()
                if reused and not response.started:  # closed while idle in the pool: once more, newly connected
                    fresh = True
                    continue
                raise
            except BaseException:
                response.release()
                raise

    def close(self) -> None:
        for pool in self._pools.values():
            for conn in list(pool):
                if conn.transport is not None:
                    conn.transport.close()
            pool.clear()
