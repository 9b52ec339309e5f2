"""How the router is served: uvicorn with uvloop and httptools, a response's head sent with its body.

uvicorn writes a response's head and its body with two `transport.write` calls, so a small answer costs two
send system calls, two TCP segments, and the client a second wake-up. `HttpProtocol` hands uvicorn's protocol
a transport that holds a response's head until the first write of its body and sends the two as one. Nothing
is scheduled for later: a body write, the response's completion (a HEAD answer has no body) and closing the
connection each send what is held. "100 Continue" is not a head and goes out at once. A stream's head waits
for its first event, which the proxy has in hand when it starts the answer.

`router_server` is the one place the server is configured: `python -m loraplane.serving.router`, local
mode and the tests all use it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CONTINUE = b"HTTP/1.1 100 "  # an interim answer to "Expect: 100-continue", not the response's head


class HeadWithBodyTransport:
    """An asyncio transport that sends each response's head together with the first write that follows it.

    `next_response()` (after a response is complete) makes the next write a head again. Everything but
    `write` and `close` is the wrapped transport's own; `close` sends a held head first.
    """

    __slots__ = ("_expect_head", "_head", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._expect_head = True

    def write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        elif self._expect_head and not data.startswith(CONTINUE):
            self._head, self._expect_head = data, False
            return
        if data and not self._transport.is_closing():
            self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            self.write(b"")

    def next_response(self) -> None:
        self.flush()
        self._expect_head = True

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `HeadWithBodyTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.head_with_body = HeadWithBodyTransport(transport)
        super().connection_made(self.head_with_body)  # type: ignore[arg-type]  # duck-typed: uvicorn only calls it

    def on_response_complete(self) -> None:
        self.head_with_body.next_response()
        super().on_response_complete()


def router_server(app: Any, host: str, port: int) -> uvicorn.Server:
    """uvicorn serving `app` the router's way; the log lines are the router's (JSON access log), not uvicorn's."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=HttpProtocol,
        ws="none",
        lifespan="on",
        access_log=False,
        log_level="warning",
        proxy_headers=False,  # nothing reads the client address; saves a middleware hop per request
        server_header=False,
    )
    return uvicorn.Server(config)
