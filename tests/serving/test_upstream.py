"""The router's upstream client against a real TCP server scripted per connection: framing (Content-Length,
chunked, until close), keep-alive reuse, the retry of a connection the server closed while idle, and every
failure the proxy tells apart (connect, disconnect, timeout). vLLM's own answers go through it in
test_router.py; here are the answers vLLM would only give when something is wrong."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from loraplane.serving.router.upstream import (
    HIGH_WATER,
    ConnectFailed,
    Disconnected,
    UpstreamClient,
    UpstreamTimeout,
)
from tests.support.kube import free_port

Reader, Writer = asyncio.StreamReader, asyncio.StreamWriter
Script = Callable[[Reader, Writer, int], Awaitable[None]]  # one connection: reader, writer, connection number


async def read_request(reader: Reader) -> tuple[bytes, bytes]:
    """One request's head and body (by its Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return head, await reader.readexactly(length)


def answer(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


def run(script: Script, test: Callable[[UpstreamClient, str, list[bytes]], Coroutine[Any, Any, None]]) -> int:
    """Serve `script` on a real port, run `test(client, url, request heads)`; returns the connections opened."""
    connections = 0
    heads: list[bytes] = []

    async def main() -> None:
        async def handle(reader: Reader, writer: Writer) -> None:
            nonlocal connections
            connections += 1
            try:
                await script(reader, writer, connections)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        async def recording(reader: Reader, writer: Writer) -> None:
            await handle(_Recorder(reader, heads), writer)  # type: ignore[arg-type]

        server = await asyncio.start_server(recording, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(connect_timeout=5)
        try:
            await asyncio.wait_for(test(client, f"http://127.0.0.1:{port}", heads), timeout=30)
        finally:
            client.close()
            server.close()

    asyncio.run(main())
    return connections


ServeTcp = Callable[[Script, Callable[[UpstreamClient, str, list[bytes]], Coroutine[Any, Any, None]]], int]


@pytest.fixture
def serve_tcp() -> ServeTcp:
    """`serve_tcp(script, test)`: `run` above, a real server on loopback (tests that take it are marked `network`)."""
    return run


class _Recorder:
    """A StreamReader that records every request head read through it."""

    def __init__(self, reader: Reader, heads: list[bytes]) -> None:
        self.reader, self.heads = reader, heads

    async def readuntil(self, separator: bytes) -> bytes:
        data = await self.reader.readuntil(separator)
        self.heads.append(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)


async def echo_once(reader: Reader, writer: Writer) -> None:
    """Answer one request with its body wrapped: {"echo": <body>}."""
    _, body = await read_request(reader)
    writer.write(answer(b'{"echo":' + body + b"}"))
    await writer.drain()


async def keep_answering(reader: Reader, writer: Writer, _: int) -> None:
    while True:
        await echo_once(reader, writer)


def test_answers_and_reuses_one_keep_alive_connection(serve_tcp: ServeTcp) -> None:
    async def test(client: UpstreamClient, url: str, heads: list[bytes]) -> None:
        for i in range(3):
            resp = await client.post(url, "/v1/chat/completions", b'{"n":%d}' % i, f"rid-{i}", total=5)
            assert (resp.status, resp.content_type) == (200, "application/json")
            assert await resp.read() == b'{"echo":{"n":%d}}' % i
            resp.release()
        head = heads[-1].decode()
        assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
        assert f"Host: {url.removeprefix('http://')}\r\n" in head and "X-Request-Id: rid-2\r\n" in head

    assert serve_tcp(keep_answering, test) == 1


def test_a_chunked_stream_arrives_chunk_by_chunk(serve_tcp: ServeTcp) -> None:
    go_on = asyncio.Event()

    async def script(reader: Reader, writer: Writer, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"7\r\ndata: 1\r\n")
        await writer.drain()
        await go_on.wait()  # the second event only after the client has the first
        writer.write(b"7\r\ndata: 2\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def test(client: UpstreamClient, url: str, _: list[bytes]) -> None:
        resp = await client.post(url, "/v1/completions", b"{}", "r", read_timeout=5)
        assert await resp.chunk() == b"data: 1"
        go_on.set()
        assert await resp.chunk() == b"data: 2"
        assert await resp.chunk() == b""
        resp.release()

    serve_tcp(script, test)


def test_a_body_until_close_is_read_whole_and_the_connection_not_reused(serve_tcp: ServeTcp) -> None:
    async def script(reader: Reader, writer: Writer, _: int) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\n\r\n{"whole":')
        await writer.drain()
        writer.write(b"true}")

    async def test(client: UpstreamClient, url: str, _: list[bytes]) -> None:
        for _ in range(2):
            resp = await client.post(url, "/v1/completions", b"{}", "r", total=5)
            assert await resp.read() == b'{"whole":true}'
            resp.release()

    assert serve_tcp(script, test) == 2


def test_a_connection_closed_while_idle_is_retried_once_on_a_new_one(serve_tcp: ServeTcp) -> None:
    """The first connection answers once, then closes when the next request arrives (a keep-alive timeout
    racing the request): that request is sent again on a new connection and answered."""

    async def script(reader: Reader, writer: Writer, number: int) -> None:
        if number == 1:
            await echo_once(reader, writer)
            await read_request(reader)
            return  # closes without answering
        await keep_answering(reader, writer, number)

    async def test(client: UpstreamClient, url: str, _: list[bytes]) -> None:
        for i in range(2):
            resp = await client.post(url, "/v1/completions", b'{"n":%d}' % i, "r", total=5)
            assert await resp.read() == b'{"echo":{"n":%d}}' % i
            resp.release()

    assert serve_tcp(script, test) == 2


def test_a_new_connection_closed_before_answering_fails_as_disconnected(serve_tcp: ServeTcp) -> None:
    async def script(reader: Reader, writer: Writer, _: int) -> None:
        await read_request(reader)

    async def test(client: UpstreamClient, url: str, _: list[bytes]) -> None:
        with pytest.raises(Disconnected):
            await client.post(url, "/v1/completions", b"{}", "r", total=5)

    assert serve_tcp(script, test) == 1, "a fresh connection is not retried"


def test_a_break_mid_body_fails_as_disconnected(serve_tcp: ServeTcp) -> None:
    async def script(reader: Reader, writer: Writer, _: int) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"cut')
        await writer.drain()

    async def test(client: UpstreamClient, url: str, _: list[bytes]) -> None:
        resp = await client.post(url, "/v1/completions", b"{}", "r", total=5)
        with pytest.raises(Disconnected, match="mid-answer"):
            await resp.read()
        resp.release()

    serve_tcp(script, test)


def test_timeouts_before_the_head_and_between_chunks(serve_tcp: ServeTcp) -> None:
    async def script(reader: Reader, writer: Writer, number: int) -> None:
        await read_request(reader)
        if number == 2:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
            await writer.drain()
        await reader.read()  # then silence

    async def test(client: UpstreamClient, url: str, _: list[bytes]) -> None:
        with pytest.raises(UpstreamTimeout, match="budget"):
            await client.post(url, "/v1/completions", b"{}", "r", total=0.2)
        resp = await client.post(url, "/v1/completions", b"{}", "r", read_timeout=0.2)
        assert await resp.chunk() == b"a"
        with pytest.raises(TimeoutError, match=r"no data for 0\.2s"):
            await resp.chunk()
        resp.release()

    assert serve_tcp(script, test) == 2, "a timed-out connection is closed, not pooled"


@pytest.mark.parametrize("whole", [True, False], ids=["read", "chunks"])
def test_a_large_answer_pauses_reading_and_still_arrives_whole(whole: bool, serve_tcp: ServeTcp) -> None:
    body = bytes(range(256)) * (3 * HIGH_WATER // 256)

    async def script(reader: Reader, writer: Writer, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        await reader.read()

    async def test(client: UpstreamClient, url: str, _: list[bytes]) -> None:
        resp = await client.post(url, "/v1/completions", b"{}", "r", read_timeout=5)
        for _ in range(500):  # the loop reads into the buffer on its own until the high-water mark
            if resp._conn.paused:
                break
            await asyncio.sleep(0.01)
        assert resp._conn.paused, "reading pauses once the answer buffered past the high-water mark"
        received = b""
        if whole:
            received = await resp.read()
        else:
            while chunk := await resp.chunk():
                received += chunk
        assert received == body
        resp.release()

    serve_tcp(script, test)


def test_an_unreachable_replica_fails_as_connect_failed() -> None:
    async def test() -> None:
        client = UpstreamClient(connect_timeout=5)
        with pytest.raises(ConnectFailed, match="cannot connect"):
            await client.post(f"http://127.0.0.1:{free_port()}", "/v1/completions", b"{}", "r", total=5)
        with pytest.raises(ConnectFailed, match="only http://"):
            await client.post("https://example.invalid", "/v1/completions", b"{}", "r", total=5)

    asyncio.run(test())
